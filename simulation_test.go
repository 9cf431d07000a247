package kpush_test

// Model-based simulation: many goroutines send keyed records (sync and
// async, some with contexts canceled at random moments) while faults hit the
// cluster. The outcomes are checked against a simple model once everything
// is read back.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

type outcome uint8

const (
	pending outcome = iota
	acked
	notWrittenOutcome
	unknownOutcome
)

type simRecord struct {
	outcome outcome
	calls   atomic.Int32 // outcomes delivered; must end at exactly 1
	part    int32
	offset  int64
}

func TestSimulation_FaultsAndCancellation(t *testing.T) {
	keys, perKey := 40, 600
	if testing.Short() {
		keys, perKey = 10, 100
	}
	const brokers, partitions = 3, 6
	c := kafkatest.NewTestCluster(t, kafkatest.WithBrokers(brokers), kafkatest.WithTopic("sim", partitions))
	var logBuf syncBuffer
	p := newProducer(t, c, kpush.WithRetryBackoff(2*time.Millisecond), kpush.WithRequestTimeout(2*time.Second),
		kpush.WithDeliveryTimeout(20*time.Second), kpush.WithLogger(slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	ctx := testCtx(t)
	f := c.Fake()

	// Faults are proportional to traffic, as on a real cluster: the produce
	// control cuts the connection of every 37th request and rejects every
	// 41st with a retriable error; leader moves need 30 produce requests
	// since the previous move. (Time-based faults would swamp the last,
	// backed-off retries once the other senders are done.)
	var reqs atomic.Int64
	var cutN, errN atomic.Int32
	codes := []*kerr.Error{kerr.NotLeaderForPartition, kerr.RequestTimedOut, kerr.NotEnoughReplicas, kerr.NotEnoughReplicasAfterAppend}
	f.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		switch n := reqs.Add(1); {
		case n%37 == 0:
			cutN.Add(1)
			return nil, errCut, true
		case n%41 == 0:
			errN.Add(1)
			return rejectProduce(req.(*kmsg.ProduceRequest), codes[n%int64(len(codes))], 0), nil, true
		}
		return nil, nil, false
	})
	stop := make(chan struct{})
	faultsDone := make(chan string)
	go func() {
		rng := rand.New(rand.NewPCG(1, 2))
		moves := 0
		lastMove := int64(0)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				faultsDone <- fmt.Sprintf("%d cuts, %d error responses, %d leader moves", cutN.Load(), errN.Load(), moves)
				return
			case <-tick.C:
			}
			if n := reqs.Load(); n-lastMove >= 30 {
				lastMove = n
				part := int32(rng.IntN(partitions))
				f.MoveTopicPartition("sim", part, (f.LeaderFor("sim", part)+1)%brokers)
				moves++
			}
		}
	}()

	records := make([][]simRecord, keys)
	var wg sync.WaitGroup
	for k := range keys {
		records[k] = make([]simRecord, perKey)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(k), 7))
			key := []byte("key-" + strconv.Itoa(k))
			record := func(i int, res kpush.Result, err error) {
				r := &records[k][i]
				r.calls.Add(1)
				switch {
				case err == nil:
					r.outcome, r.part, r.offset = acked, res.Partition, res.Offset
				case errors.Is(err, kpush.ErrNotWritten):
					r.outcome = notWrittenOutcome
				case errors.Is(err, kpush.ErrOutcomeUnknown):
					r.outcome = unknownOutcome
				default:
					t.Errorf("key %d record %d: uncategorized error %v", k, i, err)
				}
			}
			var async sync.WaitGroup
			for i := range perKey {
				rec := &kpush.Record{Topic: "sim", Key: key, Value: []byte(strconv.Itoa(k) + "/" + strconv.Itoa(i))}
				switch rng.IntN(10) {
				case 0, 1: // async; callbacks of one key arrive in order
					async.Add(1)
					p.SendAsync(ctx, rec, func(res kpush.Result, err error) { record(i, res, err); async.Done() })
					async.Wait() // keep one record per key in flight: order per key is then the send order
				case 2: // sync with a context canceled at a random moment
					cctx, cancel := context.WithCancel(ctx)
					time.AfterFunc(time.Duration(rng.IntN(3000))*time.Microsecond, cancel)
					res, err := p.Send(cctx, rec)
					cancel()
					record(i, res, err)
				default:
					res, err := p.Send(ctx, rec)
					record(i, res, err)
				}
			}
		}()
	}
	start := time.Now()
	sendersDone := make(chan struct{})
	go func() { wg.Wait(); close(sendersDone) }()
	select {
	case <-sendersDone:
	case <-time.After(15 * time.Second):
		buf := make([]byte, 8<<20)
		logs := logBuf.String()
		t.Fatalf("senders stalled: %+v\n%s\n%s\n%s", p.Stats(), p.DebugPartitions(), logs[max(0, len(logs)-6000):], buf[:runtime.Stack(buf, true)])
	}
	close(stop)
	faults := <-faultsDone
	sendTime := time.Since(start)

	got, err := c.ReadAll(ctx, "sim")
	if err != nil {
		t.Fatal(err)
	}
	type loc struct {
		part   int32
		offset int64
	}
	present := map[string][]loc{}
	for _, r := range got {
		present[string(r.Value)] = append(present[string(r.Value)], loc{r.Partition, r.Offset})
	}
	var stats [4]int
	for k := range keys {
		lastOffset := int64(-1)
		for i := range perKey {
			r := &records[k][i]
			id := strconv.Itoa(k) + "/" + strconv.Itoa(i)
			if n := r.calls.Load(); n != 1 {
				t.Fatalf("record %s got %d outcomes", id, n)
			}
			stats[r.outcome]++
			locs := present[id]
			switch r.outcome {
			case acked:
				if len(locs) != 1 || locs[0] != (loc{r.part, r.offset}) {
					t.Fatalf("acknowledged record %s at %d/%d is present at %v", id, r.part, r.offset, locs)
				}
			case notWrittenOutcome:
				if len(locs) != 0 {
					t.Fatalf("record %s reported not written is present at %v", id, locs)
				}
			case unknownOutcome:
				if len(locs) > 1 {
					t.Fatalf("record %s (outcome unknown) is present %d times", id, len(locs))
				}
			}
			if len(locs) == 1 { // one key maps to one partition: offsets grow with i
				if locs[0].offset <= lastOffset {
					t.Fatalf("key %d: record %d at offset %d after offset %d (reordered)", k, i, locs[0].offset, lastOffset)
				}
				lastOffset = locs[0].offset
			}
		}
	}
	for v := range present {
		if !strings.Contains(v, "/") {
			t.Fatalf("unexpected record %q", v)
		}
	}
	t.Logf("%d records in %v; faults %s; outcomes: %d acked, %d not written, %d unknown; retries %d",
		keys*perKey, sendTime, faults, stats[acked], stats[notWrittenOutcome], stats[unknownOutcome], p.Stats().Retries)
	if stats[acked] < keys*perKey*3/4 {
		t.Fatalf("only %d of %d records acknowledged", stats[acked], keys*perKey)
	}
}

// TestSend_MixedSyncAndAsyncOnOnePartition exercises responses that carry
// both kinds of records.
func TestSend_MixedSyncAndAsyncOnOnePartition(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("mixed", 1))
	p := newProducer(t, c)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	var asyncOK, syncOK atomic.Int32
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				rec := &kpush.Record{Topic: "mixed", Value: []byte(strconv.Itoa(g*100 + i))}
				if i%2 == 0 {
					if _, err := p.Send(ctx, rec); err != nil {
						t.Error(err)
						return
					}
					syncOK.Add(1)
					continue
				}
				wg.Add(1)
				p.SendAsync(ctx, rec, func(_ kpush.Result, err error) {
					defer wg.Done()
					if err != nil {
						t.Error(err)
						return
					}
					asyncOK.Add(1)
				})
			}
		}()
	}
	wg.Wait()
	if syncOK.Load() != 1000 || asyncOK.Load() != 1000 {
		t.Fatalf("sync %d, async %d acknowledged", syncOK.Load(), asyncOK.Load())
	}
	if st := p.Stats(); st.RecordsBuffered != 0 || st.BytesBuffered != 0 || st.RecordsSent != 2000 {
		t.Fatalf("stats after all outcomes: %+v", st)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
