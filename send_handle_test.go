package kpush_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// outcomeCh is a SendCancelable callback that records every call, so a test
// can check there was exactly one.
type outcomeCh struct {
	calls atomic.Int32
	ch    chan error
}

func newOutcomeCh() *outcomeCh { return &outcomeCh{ch: make(chan error, 2)} }

func (o *outcomeCh) cb(_ kpush.Result, err error) {
	o.calls.Add(1)
	o.ch <- err
}

// TestSendCancelable_CancelBufferedAndInflight: Cancel withdraws a record
// not yet sent (not written, absent from the log) and drops the outcome of
// one in flight (unknown, the record still written), each with exactly one
// callback, as Send with a cancelled ctx.
func TestSendCancelable_CancelBufferedAndInflight(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	p := newProducer(t, c, kpush.WithMaxInflight(1))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "t", Value: []byte("warmup")}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	holdProduce(c, release)

	inflight := newOutcomeCh()
	hIn := p.SendCancelable(ctx, &kpush.Record{Topic: "t", Value: []byte("inflight")}, inflight.cb)
	waitFor(t, func() bool { return p.Stats().InflightRequests == 1 })
	buffered := newOutcomeCh()
	hBuf := p.SendCancelable(ctx, &kpush.Record{Topic: "t", Value: []byte("buffered")}, buffered.cb)
	waitFor(t, func() bool { return p.Stats().RecordsBuffered == 2 })

	hBuf.Cancel()
	checkErr(t, <-buffered.ch, kpush.ErrNotWritten, context.Canceled)
	hIn.Cancel()
	checkErr(t, <-inflight.ch, kpush.ErrOutcomeUnknown, context.Canceled)
	hIn.Cancel() // a second Cancel delivers nothing
	hBuf.Cancel()

	close(release)
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n, m := inflight.calls.Load(), buffered.calls.Load(); n != 1 || m != 1 {
		t.Fatalf("callbacks ran %d (in flight) and %d (buffered) times, want once each", n, m)
	}
	got, err := c.ReadAll(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	for _, r := range got {
		values = append(values, string(r.Value))
	}
	if strings.Join(values, ",") != "warmup,inflight" {
		t.Fatalf("topic holds %v; want the in-flight record written and the withdrawn one absent", values)
	}
}

// TestSendCancelable_CancelAfterOutcome: Cancel after the callback ran
// changes nothing; a record failing before it is buffered gets its callback
// before SendCancelable returns.
func TestSendCancelable_CancelAfterOutcome(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	p := newProducer(t, c)
	ctx := testCtx(t)
	o := newOutcomeCh()
	h := p.SendCancelable(ctx, &kpush.Record{Topic: "t", Value: []byte("v")}, o.cb)
	if err := <-o.ch; err != nil {
		t.Fatal(err)
	}
	h.Cancel()
	if n := o.calls.Load(); n != 1 {
		t.Fatalf("callback ran %d times, want 1", n)
	}
	bad := newOutcomeCh()
	p.SendCancelable(ctx, nil, bad.cb).Cancel()
	select {
	case err := <-bad.ch:
		checkErr(t, err, kpush.ErrNotWritten, kpush.ErrNilRecord)
	default:
		t.Fatal("a nil record's callback did not run before SendCancelable returned")
	}
}

// TestSendCancelable_CancelRacesOutcome cancels records while their
// acknowledgements arrive: every record gets exactly one outcome, each a
// success or a cancellation, Flush returns, and no acknowledged record is
// missing from the log.
func TestSendCancelable_CancelRacesOutcome(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 3))
	p := newProducer(t, c)
	ctx := testCtx(t)
	const n = 3000
	var calls [n]atomic.Int32
	var acked, canceled atomic.Int32
	var wg sync.WaitGroup
	wg.Add(n)
	handles := make(chan *kpush.SendHandle, n)
	var cancelers sync.WaitGroup
	cancelers.Add(1)
	go func() { // cancel every other record as soon as it is sent
		defer cancelers.Done()
		i := 0
		for h := range handles {
			if i%2 == 0 {
				h.Cancel()
			}
			i++
		}
	}()
	for i := range n {
		h := p.SendCancelable(ctx, &kpush.Record{Topic: "t", Value: []byte("v")}, func(_ kpush.Result, err error) {
			if calls[i].Add(1) == 1 {
				defer wg.Done()
			}
			switch {
			case err == nil:
				acked.Add(1)
			case errors.Is(err, context.Canceled):
				canceled.Add(1)
			default:
				t.Errorf("record %d: %v", i, err)
			}
		})
		handles <- h
	}
	close(handles)
	cancelers.Wait()
	wg.Wait()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if k := calls[i].Load(); k != 1 {
			t.Fatalf("record %d: %d callbacks, want 1", i, k)
		}
	}
	got, err := c.ReadAll(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if int32(len(got)) < acked.Load() {
		t.Fatalf("log holds %d records, %d were acknowledged", len(got), acked.Load())
	}
	t.Logf("acked %d, cancelled %d, in log %d", acked.Load(), canceled.Load(), len(got))
}
