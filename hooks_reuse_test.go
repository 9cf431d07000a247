package kpush_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestHooks_RecordReuse: kpush's copy of a record, the *Record the record
// hooks see, is reused for later records, but never before the record's
// OnRecordDone returned: under concurrent Send, SendAsync and
// SendCancelable, no OnRecordSend comes for a pointer still live, every
// buffered and done event finds its record live and with the value it
// was sent with, and pointers do repeat (the test exercises reuse).
func TestHooks_RecordReuse(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("hu", 3))
	h := newRecorder()
	p := newProducer(t, c, kpush.WithHooks(h))
	ctx := testCtx(t)
	const goroutines, perG = 16, 150
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			var cbs sync.WaitGroup
			for i := range perG {
				v := []byte(strconv.Itoa(g) + "-" + strconv.Itoa(i))
				switch (g + i) % 3 {
				case 0:
					if _, err := p.Send(ctx, &kpush.Record{Topic: "hu", Value: v}); err != nil {
						t.Error(err)
					}
				case 1:
					cbs.Add(1)
					p.SendAsync(ctx, &kpush.Record{Topic: "hu", Value: v}, func(_ kpush.Result, err error) {
						defer cbs.Done()
						if err != nil {
							t.Error(err)
						}
					})
				default:
					cbs.Add(1)
					p.SendCancelable(ctx, &kpush.Record{Topic: "hu", Value: v}, func(_ kpush.Result, err error) {
						defer cbs.Done()
						if err != nil {
							t.Error(err)
						}
					})
				}
			}
			cbs.Wait()
		})
	}
	wg.Wait()
	h.checkPairing(t)
	h.mu.Lock()
	defer h.mu.Unlock()
	const total = goroutines * perG
	if h.sends != total || len(h.done) != total {
		t.Fatalf("%d sends, %d done; want %d each", h.sends, len(h.done), total)
	}
	// A third of the records go through SendCancelable, whose copy lives
	// in its handle and is never reused; sync.Pool drops items at random
	// under -race and at every GC. Without reuse every record has its own
	// pointer (total); with it, well under three quarters (seen ≤ 1,215 of
	// 2,400 under -race with GOGC=10).
	if len(h.ptrs) > total*3/4 {
		t.Errorf("%d distinct record pointers for %d records: kpush's copies are not reused", len(h.ptrs), total)
	}
}

// countHook is a record hook doing nothing but count, safe for
// concurrent use.
type countHook struct {
	mu               sync.Mutex
	send, buf, dones int
}

func (h *countHook) OnRecordSend(context.Context, *kpush.Record) {
	h.mu.Lock()
	h.send++
	h.mu.Unlock()
}

func (h *countHook) OnRecordBuffered(kpush.RecordBufferedEvent) {
	h.mu.Lock()
	h.buf++
	h.mu.Unlock()
}

func (h *countHook) OnRecordDone(kpush.RecordDoneEvent) {
	h.mu.Lock()
	h.dones++
	h.mu.Unlock()
}

// TestHooks_RecordHooksAllocateNothing: record hooks add no allocation
// per record to Send or SendAsync once warm (kpush's copy of the record
// lives in the pooled waiter or the slab): allocations per record with
// the three record hooks installed are those without hooks. The broker
// runs in another process (as in BenchmarkSend), so only kpush's
// allocations count.
func TestHooks_RecordHooksAllocateNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	addrs := brokerAddrs(t)
	measure := func(hooks bool) (send, async float64) {
		opts := []kpush.Option{kpush.WithBrokers(addrs...)}
		if hooks {
			opts = append(opts, kpush.WithHooks(&countHook{}))
		}
		p, err := kpush.New(opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close(context.Background())
		ctx := testCtx(t)
		rec := &kpush.Record{Topic: benchTopic, Value: make([]byte, benchValueSize)}
		const asyncN = 200
		var wg sync.WaitGroup
		cb := func(_ kpush.Result, err error) {
			if err != nil {
				t.Error(err)
			}
			wg.Done()
		}
		sendAsyncs := func() {
			wg.Add(asyncN)
			for range asyncN {
				p.SendAsync(ctx, rec, cb)
			}
			wg.Wait()
		}
		for range 100 { // connections, metadata, producer ID, pools, slabs
			if _, err := p.Send(ctx, rec); err != nil {
				t.Fatal(err)
			}
			sendAsyncs()
		}
		send = testing.AllocsPerRun(500, func() {
			if _, err := p.Send(ctx, rec); err != nil {
				t.Fatal(err)
			}
		})
		async = testing.AllocsPerRun(50, sendAsyncs) / asyncN
		return send, async
	}
	// Twice each, interleaved; the lower of each pair, so that a stray
	// background allocation (a timer, a metadata refresh) does not count.
	var none, hooked [2][2]float64
	for i := range 2 {
		none[i][0], none[i][1] = measure(false)
		hooked[i][0], hooked[i][1] = measure(true)
	}
	for k, name := range []string{"Send", "SendAsync"} {
		n, h := min(none[0][k], none[1][k]), min(hooked[0][k], hooked[1][k])
		t.Logf("%s: %.2f allocations per record without hooks, %.2f with record hooks", name, n, h)
		if h > n+0.5 {
			t.Errorf("%s: record hooks add %.2f allocations per record, want 0", name, h-n)
		}
	}
}

// TestCauseOf_BrokerErrorsAllocateNothing: metrics name a cause per
// record, so CauseOf allocates nothing for a broker error once its name
// was seen, however it is wrapped (one chain, or several errors joined).
func TestCauseOf_BrokerErrorsAllocateNothing(t *testing.T) {
	errs := map[string]error{
		"not_enough_replicas": &kpush.ProduceError{Topic: "t", Err: kerr.NotEnoughReplicas},
		"invalid_record":      fmt.Errorf("a: %w", fmt.Errorf("b: %w; %w", errors.New("c"), kerr.InvalidRecord)),
		"message_too_large":   errors.Join(errors.New("x"), kerr.MessageTooLarge),
		"other":               errors.New("something"),
	}
	for want, err := range errs {
		if got := kpush.CauseOf(err); got != want {
			t.Errorf("CauseOf(%v) = %q, want %q", err, got, want)
		}
	}
	if raceEnabled {
		return
	}
	if a := testing.AllocsPerRun(1000, func() {
		for _, err := range errs {
			kpush.CauseOf(err)
		}
	}); a != 0 {
		t.Errorf("%v allocations per %d CauseOf calls, want 0", a, len(errs))
	}
}
