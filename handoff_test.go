package kpush_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestSend_IdleSinkWritesOnCallersGoroutine: one goroutine sending one
// record at a time finds its broker's sink idle on every record after the
// first, so it writes the request itself and the sink's loop goroutine is
// not woken per record (issue 15: each hand-off costs a wake-up, often of
// an idle P, at C=1).
func TestSend_IdleSinkWritesOnCallersGoroutine(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("idle-sink", 1))
	p := newProducer(t, c)
	work := p.CountSinkWork()
	ctx := testCtx(t)
	// The first record dials and waits for the producer ID: the loop's work.
	if _, err := p.Send(ctx, &kpush.Record{Topic: "idle-sink", Value: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	wakes0, loop0 := work.LoopWakes.Load(), work.LoopWrites.Load()
	const n = 200
	for i := range n {
		res, err := p.Send(ctx, &kpush.Record{Topic: "idle-sink", Value: fmt.Appendf(nil, "v%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if res.Offset != int64(i+1) {
			t.Fatalf("record %d at offset %d", i, res.Offset)
		}
	}
	inline, loop, wakes := work.InlineWrites.Load(), work.LoopWrites.Load()-loop0, work.LoopWakes.Load()-wakes0
	t.Logf("%d sends: %d requests written by the caller, %d by the loop, %d loop wake-ups", n, inline, loop, wakes)
	// A little slack for anything unrelated that nudges the loop.
	if inline < n-n/20 || wakes > n/20 {
		t.Fatalf("%d sends: %d requests written by the caller, %d by the loop, %d loop wake-ups; want nearly all by the caller and almost no wake-ups", n, inline, loop, wakes)
	}
}

// TestSend_InlineAndLoopWritesKeepOrder: goroutines sending concurrently
// write some requests themselves (sink idle) while the loop writes others
// (requests in flight); every record lands exactly once, each goroutine's
// records in its order (one partition).
func TestSend_InlineAndLoopWritesKeepOrder(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("mixed-sink", 1))
	p := newProducer(t, c)
	work := p.CountSinkWork()
	ctx := testCtx(t)
	const senders, each = 8, 150
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := p.Send(ctx, &kpush.Record{Topic: "mixed-sink", Key: []byte{byte(g)}, Value: fmt.Appendf(nil, "%d", i)}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	recs, err := c.ReadAll(ctx, "mixed-sink")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != senders*each {
		t.Fatalf("%d records in the log, want %d", len(recs), senders*each)
	}
	next := make([]int, senders)
	for _, r := range recs {
		g := int(r.Key[0])
		if want := fmt.Sprint(next[g]); string(r.Value) != want {
			t.Fatalf("sender %d: record %q at offset %d, want %q", g, r.Value, r.Offset, want)
		}
		next[g]++
	}
	t.Logf("requests written by callers %d, by the loop %d", work.InlineWrites.Load(), work.LoopWrites.Load())
	if work.InlineWrites.Load() == 0 || work.LoopWrites.Load() == 0 {
		t.Fatalf("requests written by callers %d, by the loop %d: want both paths taken", work.InlineWrites.Load(), work.LoopWrites.Load())
	}
}

// TestSend_C1AllocationBudget: one goroutine sending one record at a time
// allocates per record only what its request and response need (kmsg's
// request and response, the batch, the outcome list), not a pending call,
// a frame buffer or an escaped error — with a cancelable ctx and with one
// that is not, whose Send reads its own response (lent reads: neither the
// lend nor the look at the socket before each write allocates). The
// broker runs in its own process (as in BenchmarkSend) so that only
// kpush's allocations are counted.
func TestSend_C1AllocationBudget(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	for _, tc := range []struct {
		name string
		ctx  context.Context
	}{{"cancelable", testCtx(t)}, {"background", context.Background()}} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := kpush.New(kpush.WithBrokers(brokerAddrs(t)...))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close(context.Background()) })
			ctx := tc.ctx
			rec := &kpush.Record{Topic: benchTopic, Value: make([]byte, benchValueSize)}
			for range 100 { // connections, metadata, producer ID, pools
				if _, err := p.Send(ctx, rec); err != nil {
					t.Fatal(err)
				}
			}
			const budget = 14 // 18 before issue 15's cuts
			allocs := testing.AllocsPerRun(500, func() {
				if _, err := p.Send(ctx, rec); err != nil {
					t.Fatal(err)
				}
			})
			t.Logf("%.1f allocations per Send", allocs)
			if allocs > budget {
				t.Fatalf("%.1f allocations per Send at C=1, budget %d", allocs, budget)
			}
		})
	}
}
