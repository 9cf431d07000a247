package kpush_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// onCallbackGoroutine reports whether the calling goroutine is a sink's
// callback goroutine (where SendAsync's and SendCancelable's callbacks run).
func onCallbackGoroutine() bool {
	buf := make([]byte, 16<<10)
	return strings.Contains(string(buf[:runtime.Stack(buf, false)]), "sink.(*callbacks).run")
}

// TestTrySendCancelable_IdleSinkWritesInlineAndAnswersOnReader: one
// sender handing one record at a time to TrySendCancelable finds the sink
// idle after the first, so it writes each request itself (the sink's loop
// is not woken), and each callback runs where the record was completed,
// not on the callback goroutine: the Python bridge's C=1 path crosses no
// kpush goroutine but the connection reader (python/docs/internals.md).
func TestTrySendCancelable_IdleSinkWritesInlineAndAnswersOnReader(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("try", 1))
	p := newProducer(t, c)
	work := p.CountSinkWork()
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "try", Value: []byte("first")}); err != nil {
		t.Fatal(err) // metadata, connection, producer ID: the loop's work
	}
	wakes0, loop0 := work.LoopWakes.Load(), work.LoopWrites.Load()
	const n = 200
	onCb := 0
	for i := range n {
		type out struct {
			res  kpush.Result
			err  error
			onCb bool
		}
		ch := make(chan out, 1)
		_, ok := p.TrySendCancelable(&kpush.Record{Topic: "try", Value: fmt.Appendf(nil, "v%d", i)}, func(res kpush.Result, err error) {
			ch <- out{res, err, onCallbackGoroutine()}
		})
		if !ok {
			t.Fatalf("record %d: TrySendCancelable would wait with the topic known and the buffer empty", i)
		}
		o := <-ch
		if o.err != nil {
			t.Fatal(o.err)
		}
		if o.res.Offset != int64(i+1) {
			t.Fatalf("record %d at offset %d", i, o.res.Offset)
		}
		if o.onCb {
			onCb++
		}
	}
	inline, loop, wakes := work.InlineWrites.Load(), work.LoopWrites.Load()-loop0, work.LoopWakes.Load()-wakes0
	t.Logf("%d records: %d requests written by the caller, %d by the loop, %d loop wake-ups, %d callbacks on the callback goroutine", n, inline, loop, wakes, onCb)
	// Slack: once woken (by anything), the sink's loop sometimes keeps the
	// sink for a stretch of records and writes them itself; the existing
	// Send test shows the same (TestSend_IdleSinkWritesOnCallersGoroutine).
	if inline < n/2 || wakes > n/20 || onCb > n/20 {
		t.Fatalf("%d records: %d requests written by the caller, %d by the loop, %d loop wake-ups, %d callbacks on the callback goroutine; want nearly all written by the caller, almost no wake-ups and callbacks where the records completed",
			n, inline, loop, wakes, onCb)
	}
}

// TestTrySendCancelable_WouldWait: with its topic's metadata not known yet,
// or with the buffer full, TrySendCancelable takes nothing and returns false
// without calling back (a caller that may wait sends with SendCancelable);
// under WithFailFastWhenFull a full buffer is the usual ErrBufferFull.
func TestTrySendCancelable_WouldWait(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("ww", 1))
	p := newProducer(t, c, kpush.WithMaxBufferedRecords(1))
	ctx := testCtx(t)
	noCall := func(kpush.Result, error) { t.Error("callback ran for a record TrySendCancelable did not take") }
	try := func(p *kpush.Producer, r *kpush.Record, cb func(kpush.Result, error)) bool {
		t.Helper()
		done := make(chan bool, 1)
		go func() {
			_, ok := p.TrySendCancelable(r, cb)
			done <- ok
		}()
		select {
		case ok := <-done:
			return ok
		case <-time.After(5 * time.Second):
			t.Fatal("TrySendCancelable waited")
			return false
		}
	}
	if try(p, &kpush.Record{Topic: "ww", Value: []byte("x")}, noCall) {
		t.Fatal("took a record of a topic whose metadata is not known yet")
	}
	if s := p.Stats(); s.RecordsBuffered != 0 || s.RecordsFailed != 0 {
		t.Fatalf("stats after a refused record: %+v", s)
	}
	if _, err := p.Send(ctx, &kpush.Record{Topic: "ww", Value: []byte("known")}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	holdProduce(c, release)
	held := newOutcomeCh()
	if !try(p, &kpush.Record{Topic: "ww", Value: []byte("held")}, held.cb) {
		t.Fatal("refused a record with the topic known and the buffer empty")
	}
	if try(p, &kpush.Record{Topic: "ww", Value: []byte("full")}, noCall) {
		t.Fatal("took a record with the buffer full")
	}
	close(release)
	if err := <-held.ch; err != nil {
		t.Fatal(err)
	}

	// Its own cluster: a second holdProduce on c would replace the first
	// control function while kfake may still run it (a data race).
	fc := kafkatest.NewTestCluster(t, kafkatest.WithTopic("ww", 1))
	ff := newProducer(t, fc, kpush.WithMaxBufferedRecords(1), kpush.WithFailFastWhenFull(true))
	if _, err := ff.Send(ctx, &kpush.Record{Topic: "ww", Value: []byte("known")}); err != nil {
		t.Fatal(err)
	}
	release = make(chan struct{})
	holdProduce(fc, release)
	defer close(release)
	if !try(ff, &kpush.Record{Topic: "ww", Value: []byte("held")}, func(kpush.Result, error) {}) {
		t.Fatal("refused a record with the buffer empty")
	}
	full := newOutcomeCh()
	if !try(ff, &kpush.Record{Topic: "ww", Value: []byte("full")}, full.cb) {
		t.Fatal("WithFailFastWhenFull: a full buffer must fail the record, not refuse it")
	}
	checkErr(t, <-full.ch, kpush.ErrNotWritten, kpush.ErrBufferFull)
}

// TestTrySendCancelable_BadInputAndHooks: bad input fails through the
// callback before TrySendCancelable returns (true: the record was dealt
// with); with record hooks installed it always refuses, so a caller's
// fallback to SendCancelable does not report the record to them twice.
func TestTrySendCancelable_BadInputAndHooks(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("bad", 1))
	p := newProducer(t, c)
	for _, tc := range []struct {
		r     *kpush.Record
		cause error
	}{
		{nil, kpush.ErrNilRecord},
		{&kpush.Record{}, kpush.ErrNoTopic},
		{&kpush.Record{Topic: "bad topic!"}, kpush.ErrInvalidTopic},
	} {
		o := newOutcomeCh()
		h, ok := p.TrySendCancelable(tc.r, o.cb)
		if !ok || h == nil {
			t.Fatalf("%+v: refused (%v), want the record failed", tc.r, ok)
		}
		select {
		case err := <-o.ch:
			checkErr(t, err, kpush.ErrNotWritten, tc.cause)
		default:
			t.Fatalf("%+v: no callback before TrySendCancelable returned", tc.r)
		}
		h.Cancel() // a no-op now
		if n := o.calls.Load(); n != 1 {
			t.Fatalf("%+v: %d callbacks", tc.r, n)
		}
	}

	hp := newProducer(t, c, kpush.WithHooks(hooksOnly{}))
	ctx := testCtx(t)
	if _, err := hp.Send(ctx, &kpush.Record{Topic: "bad", Value: []byte("known")}); err != nil {
		t.Fatal(err)
	}
	if _, ok := hp.TrySendCancelable(&kpush.Record{Topic: "bad", Value: []byte("x")}, nil); ok {
		t.Fatal("took a record with record hooks installed")
	}
}

// TestTrySendCancelable_CallbackOrderWithSlowCallbacks: on one partition,
// records from TrySendCancelable (callbacks run where they complete) and
// from SendAsync (callbacks on the callback goroutine, here slow) get their
// callbacks one at a time in send order: an inline record never overtakes
// a slow callback still running or waiting, and SendAsync's callbacks stay
// on the callback goroutine.
func TestTrySendCancelable_CallbackOrderWithSlowCallbacks(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("order", 1))
	p := newProducer(t, c)
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "order", Value: []byte("known")}); err != nil {
		t.Fatal(err)
	}
	const n = 300
	var mu sync.Mutex
	var got []int
	running := 0
	var wg sync.WaitGroup
	wg.Add(n)
	cb := func(i int, slow bool) func(kpush.Result, error) {
		return func(_ kpush.Result, err error) {
			defer wg.Done()
			mu.Lock()
			running++
			if running > 1 {
				t.Errorf("record %d: two callbacks of one partition at once", i)
			}
			got = append(got, i)
			mu.Unlock()
			if err != nil {
				t.Errorf("record %d: %v", i, err)
			}
			if slow {
				if !onCallbackGoroutine() {
					t.Errorf("record %d: a SendAsync callback ran off the callback goroutine", i)
				}
				time.Sleep(200 * time.Microsecond)
			}
			mu.Lock()
			running--
			mu.Unlock()
		}
	}
	for i := range n {
		r := &kpush.Record{Topic: "order", Value: fmt.Appendf(nil, "%d", i)}
		if i%3 == 0 {
			p.SendAsync(ctx, r, cb(i, true))
			continue
		}
		if _, ok := p.TrySendCancelable(r, cb(i, false)); !ok {
			p.SendCancelable(ctx, r, cb(i, false)) // buffer short: as the bridge falls back
		}
		if i%7 == 0 {
			time.Sleep(50 * time.Microsecond) // let some find the sink idle
		}
	}
	wg.Wait()
	for i, v := range got {
		if v != i {
			t.Fatalf("callback %d was record %d's; order: %v", i, v, got[:min(len(got), i+5)])
		}
	}
}

// TestTrySendCancelable_Cancel: a record taken by TrySendCancelable and held
// in flight is abandoned by Cancel (outcome unknown, exactly one callback),
// as SendCancelable's.
func TestTrySendCancelable_Cancel(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("tc", 1))
	p := newProducer(t, c)
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "tc", Value: []byte("known")}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	holdProduce(c, release)
	o := newOutcomeCh()
	h, ok := p.TrySendCancelable(&kpush.Record{Topic: "tc", Value: []byte("inflight")}, o.cb)
	if !ok {
		t.Fatal("refused")
	}
	waitFor(t, func() bool { return p.Stats().InflightRequests == 1 })
	h.Cancel()
	checkErr(t, <-o.ch, kpush.ErrOutcomeUnknown, context.Canceled)
	close(release)
	if err := p.Flush(ctx); err != nil && !errors.Is(err, kpush.ErrClosed) {
		t.Fatal(err)
	}
	if n := o.calls.Load(); n != 1 {
		t.Fatalf("%d callbacks, want 1", n)
	}
}

// hooksOnly is a record hook that does nothing.
type hooksOnly struct{}

func (hooksOnly) OnRecordSend(context.Context, *kpush.Record) {}

// TestTrySendCancelable_RefusedDoesNotMovePartitioner: a record refused for
// buffer space took nothing, not even its place in the partitioner's
// rotation: with round robin, the next record goes where it would have gone
// had the refused ones never been offered.
func TestTrySendCancelable_RefusedDoesNotMovePartitioner(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("rr", 2))
	p := newProducer(t, c, kpush.WithMaxBufferedRecords(1), kpush.WithPartitioner(kpush.RoundRobinPartitioner))
	ctx := testCtx(t)
	first, err := p.Send(ctx, &kpush.Record{Topic: "rr", Value: []byte("a")})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	holdProduce(c, release)
	held := newOutcomeCh()
	if _, ok := p.TrySendCancelable(&kpush.Record{Topic: "rr", Value: []byte("held")}, held.cb); !ok {
		t.Fatal("refused a record with the buffer empty")
	}
	for range 3 { // odd: each one that moved the rotation would flip the next partition
		if _, ok := p.TrySendCancelable(&kpush.Record{Topic: "rr", Value: []byte("full")}, nil); ok {
			t.Fatal("took a record with the buffer full")
		}
	}
	close(release)
	if err := <-held.ch; err != nil {
		t.Fatal(err)
	}
	next, err := p.Send(ctx, &kpush.Record{Topic: "rr", Value: []byte("c")})
	if err != nil {
		t.Fatal(err)
	}
	if next.Partition != first.Partition {
		t.Fatalf("record after 3 refused ones on partition %d, want %d (round robin: a, held, c)", next.Partition, first.Partition)
	}
}
