package kpush_test

// The soak (issue 4): continuous traffic under rotating faults for a long
// time (-kpush.soak=10m), while a consumer verifies every record as it
// arrives and deletes what it has checked, so that neither side's memory
// grows with the run's length. Memory and goroutines are sampled; they must
// stay flat. Without the flag it runs for a few seconds, to keep the code
// working, and asserts nothing about memory.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

var soakFor = flag.Duration("kpush.soak", 0, "run the soak test this long (e.g. 10m) and check memory stays flat; 0 runs a short smoke")

const (
	soakTopic     = "soak"
	soakSyncKeys  = 200 // goroutines sending one record at a time
	soakAsyncKeys = 4   // goroutines with up to soakWindow records outstanding
	soakWindow    = 256
	// soakRate caps the records sent per second, so that the verifying
	// consumer keeps up and the broker's log (in this process) stays
	// small: memory growth would then be kpush's own.
	soakRate = 50_000
)

// soakKey is the verifier's view of one key. Values are "key/seq"; a key's
// records are sent in seq order and must appear in that order, once.
type soakKey struct {
	mu         sync.Mutex
	lastSeen   int64              // highest seq read back; -1 before any
	ackedAhead map[int64]struct{} // acknowledged, not yet read back
	notWritten map[int64]struct{} // reported not written, beyond lastSeen
	skipped    map[int64]struct{} // not in the log, outcome not known when skipped
	maxAcked   int64
}

type soakRun struct {
	keys                       []soakKey
	sent                       atomic.Int64
	acked, notWritten, unknown atomic.Int64
	violations                 atomic.Int64
	vmu                        sync.Mutex
	examples                   []string
	maxOffset                  []atomic.Int64 // per partition: highest acknowledged offset

	// Invariants (reliability_invariants_test.go): outcomes past their
	// deadline plus slack, SendAsync callbacks out of offset order per
	// partition, the most bytes held.
	late, worstLate atomic.Int64
	cbmu            sync.Mutex
	cbLast          map[int32]int64
	cbWrong         int
	memMax          int64 // written by the sampler only
}

// soakDelivery is the soak producer's delivery timeout.
const soakDelivery = 30 * time.Second

// checkInvariants checks the outcome of a record sent at start.
func (s *soakRun) checkInvariants(k int, seq int64, start time.Time, async bool, res kpush.Result, err error) {
	if late := time.Since(start) - soakDelivery; late > 0 {
		for {
			w := s.worstLate.Load()
			if int64(late) <= w || s.worstLate.CompareAndSwap(w, int64(late)) {
				break
			}
		}
		if late > deadlineSlack() {
			s.late.Add(1)
		}
	}
	if async && err == nil && res.Offset >= 0 {
		s.cbmu.Lock()
		defer s.cbmu.Unlock()
		if last, ok := s.cbLast[res.Partition]; ok && res.Offset < last {
			s.cbWrong++
			return
		}
		s.cbLast[res.Partition] = res.Offset
	}
}

func (s *soakRun) violate(format string, args ...any) {
	if s.violations.Add(1) <= 5 {
		s.vmu.Lock()
		s.examples = append(s.examples, fmt.Sprintf(format, args...))
		s.vmu.Unlock()
	}
}

// outcome records what Send or the callback reported for k/seq.
func (s *soakRun) outcome(k int, seq int64, res kpush.Result, err error) {
	key := &s.keys[k]
	key.mu.Lock()
	defer key.mu.Unlock()
	_, skipped := key.skipped[seq]
	delete(key.skipped, seq)
	read := seq <= key.lastSeen && !skipped
	switch {
	case err == nil:
		s.acked.Add(1)
		key.maxAcked = max(key.maxAcked, seq)
		switch {
		case skipped:
			s.violate("key %d: seq %d acknowledged but missing from the log", k, seq)
		case !read:
			key.ackedAhead[seq] = struct{}{}
		}
		for {
			m := s.maxOffset[res.Partition].Load()
			if res.Offset <= m || s.maxOffset[res.Partition].CompareAndSwap(m, res.Offset) {
				break
			}
		}
	case errors.Is(err, kpush.ErrNotWritten):
		s.notWritten.Add(1)
		switch {
		case read:
			s.violate("key %d: seq %d reported not written, but it is in the log", k, seq)
		case !skipped:
			key.notWritten[seq] = struct{}{}
		}
	default:
		s.unknown.Add(1)
	}
}

// read checks one record read back.
func (s *soakRun) read(r *kgo.Record) {
	k, seq, ok := soakParse(r.Value)
	if !ok || k >= len(s.keys) {
		s.violate("foreign record %q at %d/%d", r.Value, r.Partition, r.Offset)
		return
	}
	key := &s.keys[k]
	key.mu.Lock()
	defer key.mu.Unlock()
	if seq <= key.lastSeen {
		s.violate("key %d: seq %d read after %d (duplicate or reordered) at %d/%d", k, seq, key.lastSeen, r.Partition, r.Offset)
		return
	}
	if _, ok := key.notWritten[seq]; ok {
		s.violate("key %d: seq %d reported not written, found at %d/%d", k, seq, r.Partition, r.Offset)
	}
	// Everything skipped between lastSeen and seq must not be acknowledged;
	// what has no outcome yet is remembered (async records' callbacks may
	// run after the consumer read their successors).
	for skipped := key.lastSeen + 1; skipped < seq; skipped++ {
		_, acked := key.ackedAhead[skipped]
		_, failed := key.notWritten[skipped]
		switch {
		case acked:
			s.violate("key %d: seq %d acknowledged but missing (next in the log: %d)", k, skipped, seq)
			delete(key.ackedAhead, skipped)
		case failed:
			delete(key.notWritten, skipped)
		default:
			key.skipped[skipped] = struct{}{}
		}
	}
	delete(key.ackedAhead, seq)
	delete(key.notWritten, seq)
	key.lastSeen = seq
}

func soakParse(v []byte) (k int, seq int64, ok bool) {
	ks, ss, found := strings.Cut(string(v), "/")
	k, err1 := strconv.Atoi(ks)
	seq, err2 := strconv.ParseInt(ss, 10, 64)
	return k, seq, found && err1 == nil && err2 == nil && k >= 0
}

func TestSoak(t *testing.T) {
	dur := *soakFor
	long := dur > 0
	if !long {
		dur = 3 * time.Second
		if testing.Short() {
			dur = time.Second
		}
	}
	sampleEvery := max(dur/20, 250*time.Millisecond)

	n := newRelNet()
	var produceResponses atomic.Int64
	var cuts atomic.Int64
	faultsOn := atomic.Bool{}
	faultsOn.Store(true)
	n.hook = func(c *relConn, key, version int16, frame []byte) ([]byte, bool) {
		// Every 997th produce response is lost with its connection, after
		// the broker applied the request.
		if key == int16(kmsg.Produce) && faultsOn.Load() && produceResponses.Add(1)%997 == 0 {
			cuts.Add(1)
			return nil, true
		}
		return nil, false
	}
	const partitions = 6
	c := kafkatest.NewTestCluster(t, kafkatest.WithBrokers(3), kafkatest.WithTopic(soakTopic, partitions),
		kafkatest.WithKfakeOptions(kfake.ListenFn(n.listen)))
	f := c.Fake()
	var reqs, moves, rejected, bumps atomic.Int64
	f.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		i := reqs.Add(1)
		if !faultsOn.Load() {
			return nil, nil, false
		}
		switch {
		case i%1009 == 0:
			part := int32(i/1009) % partitions
			f.MoveTopicPartition(soakTopic, part, (f.LeaderFor(soakTopic, part)+1)%3)
			moves.Add(1)
		case i%499 == 0:
			rejected.Add(1)
			codes := []*kerr.Error{kerr.NotLeaderForPartition, kerr.RequestTimedOut, kerr.NotEnoughReplicas, kerr.LeaderNotAvailable}
			return rejectProduce(req.(*kmsg.ProduceRequest), codes[(i/499)%4], 5), nil, true
		case i%2003 == 0:
			bumps.Add(1)
			return rejectProduce(req.(*kmsg.ProduceRequest), kerr.OutOfOrderSequenceNumber, 0), nil, true
		}
		return nil, nil, false
	})

	ctx, cancel := context.WithTimeout(context.Background(), dur+2*time.Minute)
	defer cancel()
	p := newProducer(t, c, kpush.WithRetryBackoff(2*time.Millisecond), kpush.WithRequestTimeout(2*time.Second), kpush.WithDeliveryTimeout(soakDelivery))

	s := &soakRun{keys: make([]soakKey, soakSyncKeys+soakAsyncKeys), maxOffset: make([]atomic.Int64, partitions), cbLast: map[int32]int64{}}
	for k := range s.keys {
		s.keys[k] = soakKey{lastSeen: -1, maxAcked: -1, ackedAhead: map[int64]struct{}{}, notWritten: map[int64]struct{}{}, skipped: map[int64]struct{}{}}
	}
	for i := range s.maxOffset {
		s.maxOffset[i].Store(-1)
	}

	// The verifying consumer, deleting what it has checked.
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...), kgo.ConsumeTopics(soakTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	consumed := make([]atomic.Int64, partitions) // next offset to read
	var rereads atomic.Int64
	consumerDone := make(chan struct{})
	stopConsumer := make(chan struct{})
	go func() {
		defer close(consumerDone)
		lastDelete := time.Now()
		for {
			select {
			case <-stopConsumer:
				return
			default:
			}
			pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
			fs := cl.PollFetches(pctx)
			pcancel()
			fs.EachRecord(func(r *kgo.Record) {
				// A consumer that resets its position (leader moves)
				// reads offsets again; a duplicate has its own offset.
				if r.Offset < consumed[r.Partition].Load() {
					rereads.Add(1)
					return
				}
				s.read(r)
				consumed[r.Partition].Store(r.Offset + 1)
			})
			if time.Since(lastDelete) > time.Second {
				lastDelete = time.Now()
				req := kmsg.NewPtrDeleteRecordsRequest()
				rt := kmsg.NewDeleteRecordsRequestTopic()
				rt.Topic = soakTopic
				for part := range consumed {
					if off := consumed[part].Load(); off > 0 {
						rp := kmsg.NewDeleteRecordsRequestTopicPartition()
						rp.Partition, rp.Offset = int32(part), off
						rt.Partitions = append(rt.Partitions, rp)
					}
				}
				req.Topics = append(req.Topics, rt)
				req.TimeoutMillis = 5000
				req.RequestWith(ctx, cl) // best effort: the next round retries
			}
		}
	}()

	// Senders, paced by tokens.
	stop := make(chan struct{})
	tokens := make(chan struct{}, soakRate/50)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		fill:
			for range soakRate / 50 {
				select {
				case tokens <- struct{}{}:
				default:
					break fill
				}
			}
		}
	}()
	take := func() bool {
		select {
		case <-tokens:
			return true
		case <-stop:
			return false
		}
	}
	var wg sync.WaitGroup
	for k := range soakSyncKeys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := int64(0); take(); seq++ {
				s.sent.Add(1)
				start := time.Now()
				res, err := p.Send(ctx, &kpush.Record{Topic: soakTopic, Key: relKey(k), Value: []byte(strconv.Itoa(k) + "/" + strconv.FormatInt(seq, 10))})
				s.checkInvariants(k, seq, start, false, res, err)
				s.outcome(k, seq, res, err)
			}
		}()
	}
	for a := range soakAsyncKeys {
		k := soakSyncKeys + a
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem := make(chan struct{}, soakWindow)
			for seq := int64(0); ; seq++ {
				select {
				case <-stop:
					for range soakWindow {
						sem <- struct{}{}
					}
					return
				case sem <- struct{}{}:
				}
				if !take() {
					<-sem
					continue // stop is closed: the next round drains the window
				}
				s.sent.Add(1)
				start := time.Now()
				p.SendAsync(ctx, &kpush.Record{Topic: soakTopic, Key: relKey(k), Value: []byte(strconv.Itoa(k) + "/" + strconv.FormatInt(seq, 10))},
					func(res kpush.Result, err error) {
						s.checkInvariants(k, seq, start, true, res, err)
						s.outcome(k, seq, res, err)
						<-sem
					})
			}
		}()
	}

	// Sample memory.
	lag := func() int64 { // acknowledged but not yet read back
		var n int64
		for part := range consumed {
			n += max(0, s.maxOffset[part].Load()+1-consumed[part].Load())
		}
		return n
	}
	t0 := time.Now()
	rep := &soakReport{duration: dur.String(),
		faults: "every 997th produce response lost with its connection after the broker applied it; every 499th produce request refused with a rotating retriable error (NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS, LEADER_NOT_AVAILABLE) and a throttle time; every 1009th a partition leader moves; every 2003rd OUT_OF_ORDER_SEQUENCE_NUMBER (epoch bump)"}
	sample := func() {
		held, reserved, queued := heldBytes(p)
		if float64(queued) > float64(reserved)+defaultMaxBufBytes*memTolerance {
			s.violate("memory: partitions hold %s, only %s reserved", fmtBytes(queued), fmtBytes(reserved))
		}
		s.memMax = max(s.memMax, held)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		rep.samples = append(rep.samples, soakSample{at: time.Since(t0), acked: s.acked.Load(),
			heapMiB: float64(ms.HeapInuse) / (1 << 20), sysMiB: float64(ms.Sys-ms.HeapReleased) / (1 << 20),
			rssMiB: rssMiB(), goroutines: runtime.NumGoroutine(), bufferedKiB: float64(p.Stats().BytesBuffered) / 1024, heldKiB: float64(held) / 1024, lag: lag()})
	}
	ticker := time.NewTicker(sampleEvery)
	end := time.NewTimer(dur)
loop:
	for {
		select {
		case <-ticker.C:
			sample()
			if long {
				x := rep.samples[len(rep.samples)-1]
				t.Logf("soak %v: %d acked, heap %.1f MiB, RSS %.1f MiB, %d goroutines, kpush buffer %.0f KiB, consumer lag %d", x.at.Round(time.Second), x.acked, x.heapMiB, x.rssMiB, x.goroutines, x.bufferedKiB, x.lag)
			}
		case <-end.C:
			break loop
		}
	}
	ticker.Stop()

	// Stop, settle, catch up, check.
	close(stop)
	wg.Wait()
	faultsOn.Store(false)
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	caughtUp := func() bool {
		for part := range consumed {
			if consumed[part].Load() <= s.maxOffset[part].Load() {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(60 * time.Second); !caughtUp(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("consumer did not catch up with the acknowledged offsets")
		}
	}
	time.Sleep(300 * time.Millisecond) // trailing unknown-outcome records, if any
	close(stopConsumer)
	<-consumerDone
	sample()
	for k := range s.keys {
		key := &s.keys[k]
		if key.maxAcked > key.lastSeen {
			s.violate("key %d: seq %d acknowledged, last read back %d", k, key.maxAcked, key.lastSeen)
		}
		if n := len(key.ackedAhead); n > 0 {
			s.violate("key %d: %d acknowledged records never read back", k, n)
		}
	}

	rep.records, rep.acked, rep.notWritten, rep.unknown = s.sent.Load(), s.acked.Load(), s.notWritten.Load(), s.unknown.Load()
	rep.faults += fmt.Sprintf(" — injected: %d cuts, %d refusals, %d leader moves, %d sequence errors", cuts.Load(), rejected.Load(), moves.Load(), bumps.Load())
	t.Logf("soak: consumer read %d records again after resetting its position", rereads.Load())
	outcomes := rep.acked + rep.notWritten + rep.unknown
	if outcomes != rep.records {
		s.violate("%d records sent, %d outcomes", rep.records, outcomes)
	}
	if v := s.violations.Load(); v > 0 {
		t.Errorf("soak: %d violations:\n  %s", v, strings.Join(s.examples, "\n  "))
	}
	if rep.acked < rep.records*9/10 {
		t.Errorf("soak: only %d of %d records acknowledged", rep.acked, rep.records)
	}
	rep.verdict = fmt.Sprintf("Model violations (lost, duplicated, reordered, second outcomes): %d.", s.violations.Load())
	s.cbmu.Lock()
	cbWrong := s.cbWrong
	s.cbmu.Unlock()
	rep.verdict += fmt.Sprintf(" Outcomes later than the %v delivery timeout + %v: %d (worst +%v). SendAsync callbacks out of offset order within a partition: %d. Most bytes held: %s of %s.",
		soakDelivery, deadlineSlack(), s.late.Load(), time.Duration(s.worstLate.Load()).Round(time.Millisecond), cbWrong, fmtBytes(s.memMax), fmtBytes(defaultMaxBufBytes))
	type failed struct{ defect, msg string }
	var invFailed []failed
	if n := s.late.Load(); n > 0 {
		invFailed = append(invFailed, failed{"defect8", fmt.Sprintf("soak: %d outcomes later than their deadline + %v (worst +%v)", n, deadlineSlack(), time.Duration(s.worstLate.Load()))})
	}
	if cbWrong > 0 {
		invFailed = append(invFailed, failed{"defect6", fmt.Sprintf("soak: %d SendAsync callbacks out of offset order within a partition", cbWrong)})
	}
	if float64(s.memMax) > defaultMaxBufBytes*(1+memTolerance) {
		invFailed = append(invFailed, failed{"defect2", fmt.Sprintf("soak: %s held, bound %s", fmtBytes(s.memMax), fmtBytes(defaultMaxBufBytes))})
	}
	var awaited []string
	for _, f := range invFailed {
		if why, ok := awaiting(f.defect); ok {
			awaited = append(awaited, fmt.Sprintf("%s (awaiting fix: %s: %s)", f.msg, f.defect, why))
			continue
		}
		t.Error(f.msg)
	}
	if long {
		rep.verdict += " " + soakFlat(t, rep.samples)
	} else {
		rep.verdict += " Memory not judged: a smoke run of " + dur.String() + "."
	}
	rep.result = "PASS"
	if t.Failed() {
		rep.result = "FAIL"
	}
	if len(awaited) > 0 && !t.Failed() {
		rep.result = "SKIP: " + strings.Join(awaited, "; ")
	}
	relReport.setSoak(rep)
	t.Logf("soak %v: %d records, %d acked, %d not written, %d unknown; %s", dur, rep.records, rep.acked, rep.notWritten, rep.unknown, rep.verdict)
	if len(awaited) > 0 && !t.Failed() {
		t.Skip(strings.Join(awaited, "\n"))
	}
}

// soakFlat judges the memory samples: after warm-up (the first quarter),
// the heap's high point in the last half must be within 25% (or 8 MiB) of
// its high point in the second quarter, and goroutines must not grow.
func soakFlat(t *testing.T, samples []soakSample) string {
	n := len(samples) - 1 // the last sample is after the senders stopped
	if n < 8 {
		t.Errorf("soak: only %d memory samples", n)
		return "too few samples"
	}
	peak := func(from, to int) (heap float64, gr int) {
		for _, s := range samples[from:to] {
			heap, gr = max(heap, s.heapMiB), max(gr, s.goroutines)
		}
		return
	}
	h1, g1 := peak(n/4, n/2)
	h2, g2 := peak(n/2, n)
	verdict := fmt.Sprintf("Heap peak %.1f MiB in the second quarter, %.1f MiB in the second half; goroutines %d then %d", h1, h2, g1, g2)
	if h2 > max(h1*1.25, h1+8) || g2 > g1+50 {
		t.Errorf("soak: memory not flat: %s", verdict)
		return verdict + ": **not flat**."
	}
	return verdict + ": flat."
}

// rssMiB is the process's resident set size, or 0 where /proc is missing.
func rssMiB() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return float64(pages*int64(os.Getpagesize())) / (1 << 20)
}
