package kpush_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestFlush_ReturnsUnderSteadyLoad: Flush waits for the records sent
// before it (Java's flush()), not for the producer to be idle. Goroutines
// keep sending throughout, and a record sent once Flush has started
// keeps its callback running until Flush has returned; the old Flush,
// which waited for no record at all to be undelivered, never returned.
func TestFlush_ReturnsUnderSteadyLoad(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("steady", 3))
	p := newProducer(t, c)
	ctx := testCtx(t)

	stop := make(chan struct{})
	running := make(chan struct{}) // closed once the load is under way
	var once sync.Once
	var wg sync.WaitGroup
	var sent atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := p.Send(ctx, &kpush.Record{Topic: "steady", Value: []byte("load")}); err != nil {
					t.Errorf("Send: %v", err)
					return
				}
				if sent.Add(1) == 200 {
					once.Do(func() { close(running) })
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	select {
	case <-running:
	case <-ctx.Done():
		t.Fatal("the load never got going")
	}

	flushed := make(chan struct{})
	lateDone := make(chan error, 1)
	kpush.SetFlushSealedHook(p, func() {
		// Sent after Flush fixed what it waits for: must not hold it up.
		p.SendAsync(ctx, &kpush.Record{Topic: "steady", Value: []byte("late")}, func(_ kpush.Result, err error) {
			<-flushed
			lateDone <- err
		})
	})
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := p.Flush(fctx)
	close(flushed)
	if err != nil {
		t.Fatalf("Flush under steady load = %v, want nil (it must not wait for records sent after it)", err)
	}
	select {
	case err := <-lateDone:
		if err != nil {
			t.Errorf("late record: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the late record got no outcome")
	}
	t.Logf("%d records sent by the load goroutines so far", sent.Load())
}

// TestFlush_WaitsForEveryEarlierRecord: when Flush returns, every record
// sent before it has its outcome delivered, callbacks included. The
// callbacks are held until Flush has started waiting, so a Flush that
// returned early would find them unfinished.
func TestFlush_WaitsForEveryEarlierRecord(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithBrokers(2), kafkatest.WithTopic("early", 4))
	p := newProducer(t, c)
	ctx := testCtx(t)

	const n = 500
	flushWaiting := make(chan struct{})
	var delivered atomic.Int64
	for i := range n {
		p.SendAsync(ctx, &kpush.Record{Topic: "early", Value: []byte("early")}, func(_ kpush.Result, err error) {
			if err != nil {
				t.Errorf("record %d: %v", i, err)
			}
			<-flushWaiting
			delivered.Add(1)
		})
	}
	kpush.SetFlushSealedHook(p, func() { close(flushWaiting) })
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := p.Flush(fctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got := delivered.Load(); got != n {
		t.Errorf("Flush returned with %d of %d earlier callbacks finished", got, n)
	}
}

// TestFlushClose_SameErrorShape: when ctx ends while a record is in
// flight, Flush and Close both return a *ProduceError that matches
// ErrOutcomeUnknown and wraps ctx's error; afterwards both return
// ErrClosed.
func TestFlushClose_SameErrorShape(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("held", 1))
	release := make(chan struct{})
	f := c.Fake()
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		<-release // blocks only this test's cluster (see TestBadInput)
		return nil, nil, false
	})
	defer close(release) // before the cluster's Close (a t.Cleanup)
	p := newProducer(t, c)
	ctx := testCtx(t)
	outcome := make(chan error, 2)
	p.SendAsync(ctx, &kpush.Record{Topic: "held", Value: []byte("x")}, func(_ kpush.Result, err error) { outcome <- err })

	check := func(api string, err error, cause error) {
		t.Helper()
		var pe *kpush.ProduceError
		if !errors.As(err, &pe) || !errors.Is(err, kpush.ErrOutcomeUnknown) || errors.Is(err, kpush.ErrNotWritten) || !errors.Is(err, cause) {
			t.Errorf("%s = %v (%T); want a *ProduceError matching ErrOutcomeUnknown and %v", api, err, err, cause)
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	check("Flush", p.Flush(fctx), context.DeadlineExceeded)
	canceled, cancel2 := context.WithCancel(ctx)
	cancel2()
	check("Close", p.Close(canceled), context.Canceled)
	if err := p.Flush(ctx); err != kpush.ErrClosed {
		t.Errorf("Flush after Close = %v, want ErrClosed", err)
	}
	if err := p.Close(ctx); err != kpush.ErrClosed {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	select {
	case err := <-outcome:
		if !errors.Is(err, kpush.ErrOutcomeUnknown) {
			t.Errorf("held record: %v, want ErrOutcomeUnknown", err)
		}
	default:
		t.Error("Close returned before the held record had its outcome")
	}
}

// TestFlush_NothingOutstandingDoneCtx: Flush with every earlier record
// delivered returns nil even if ctx is done already. It used to select
// between the done generations and ctx.Done, so it returned ctx's error
// about half the time; 50 tries catch that.
func TestFlush_NothingOutstandingDoneCtx(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("idle", 1))
	p := newProducer(t, c)
	ctx := testCtx(t)
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := p.Flush(done); err != nil {
		t.Fatalf("Flush before any record, ctx done: %v, want nil", err)
	}
	for i := range 50 {
		if _, err := p.Send(ctx, &kpush.Record{Topic: "idle", Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
		if err := p.Flush(done); err != nil {
			t.Fatalf("try %d: Flush after the record's outcome, ctx done: %v, want nil", i, err)
		}
	}
}
