package kpush_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// writtenHook keeps the record count of every produce request written.
type writtenHook struct {
	mu   sync.Mutex
	recs []int
}

func (h *writtenHook) OnRequestWritten(ev kpush.RequestWrittenEvent) {
	if ev.Err == nil {
		h.mu.Lock()
		h.recs = append(h.recs, ev.Records)
		h.mu.Unlock()
	}
}

// written returns the record counts of the requests written so far.
func (h *writtenHook) written() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int(nil), h.recs...)
}

// waitWritten waits (10 s at most) until n requests were written.
func (h *writtenHook) waitWritten(t *testing.T, n int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(h.written()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d requests written after 10 s, want %d: %v", what, len(h.written()), n, h.written())
		}
		time.Sleep(time.Millisecond)
	}
}

// newCoalesceProducer makes a producer with h and opts, and sends one
// record to topic first so its partition is past the probe phase (one
// batch in flight until the first answer) and h has seen nothing yet.
func newCoalesceProducer(t *testing.T, c *kafkatest.Cluster, topic string, h *writtenHook, opts ...kpush.Option) *kpush.Producer {
	p := newProducer(t, c, append([]kpush.Option{kpush.WithHooks(h)}, opts...)...)
	if _, err := p.Send(testCtx(t), &kpush.Record{Topic: topic, Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	// OnRequestWritten may run after the response was handled (hooks.go):
	// a late count of the warm-up request would pass for the test's first.
	h.waitWritten(t, 1, "warm-up request")
	h.mu.Lock()
	h.recs = nil
	h.mu.Unlock()
	return p
}

// holdAllProduce makes the fake broker hold every produce request until
// release is closed (the test closes it at cleanup, so Close cannot hang).
func holdAllProduce(t *testing.T, c *kafkatest.Cluster) (release func()) {
	f := c.Fake()
	ch := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release)
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		c.SleepControl(func() { <-ch })
		return nil, nil, false
	})
	return release
}

// sendAsyncN sends n records of size bytes to partition 0 of topic,
// letting the sink's loop run between them, and returns a wait for their
// outcomes.
func sendAsyncN(t *testing.T, p *kpush.Producer, topic string, n, size int) (wait func()) {
	var wg sync.WaitGroup
	wg.Add(n)
	for range n {
		p.SendAsync(context.Background(), &kpush.Record{Topic: topic, Value: make([]byte, size)},
			func(_ kpush.Result, err error) {
				defer wg.Done()
				if err != nil {
					t.Error(err)
				}
			})
		time.Sleep(200 * time.Microsecond) // room for the loop to send (old behaviour)
	}
	return wg.Wait
}

// TestSend_CoalesceWaits: while a request is in flight, records that come
// in wait for its response and go out together in one request, instead of
// one small request each while in-flight slots are free.
func TestSend_CoalesceWaits(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("cw", 1))
	h := &writtenHook{}
	p := newCoalesceProducer(t, c, "cw", h, kpush.WithCoalesceMaxWait(time.Minute))
	release := holdAllProduce(t, c)
	wait := sendAsyncN(t, p, "cw", 1, 10)
	h.waitWritten(t, 1, "first record")
	waitRest := sendAsyncN(t, p, "cw", 20, 10)
	time.Sleep(50 * time.Millisecond) // the old policy would have written more by now
	if w := h.written(); len(w) != 1 {
		t.Fatalf("requests written while the first is in flight: %v, want only the first", w)
	}
	release()
	wait()
	waitRest()
	// OnRequestWritten may run after the response was handled (hooks.go):
	// the outcomes can be in before the second request is counted.
	h.waitWritten(t, 2, "the held records")
	if w := h.written(); len(w) != 2 || w[1] != 20 {
		t.Fatalf("requests written (records each): %v, want [1 20]", w)
	}
}

// TestSend_CoalesceSecondRequestNotHeld: with a request held in flight, a
// second one is still written — at once with WithCoalesceBytes(0) (the old
// policy), and after the cap otherwise, even though the in-flight response
// never comes before it.
func TestSend_CoalesceSecondRequestNotHeld(t *testing.T) {
	for _, tc := range []struct {
		name, topic string
		n, size     int
		opts        []kpush.Option
	}{
		{"coalescing off", "co", 5, 10, []kpush.Option{kpush.WithCoalesceBytes(0), kpush.WithCoalesceMaxWait(time.Minute)}},
		{"past the cap", "cb", 1, 10, []kpush.Option{kpush.WithCoalesceMaxWait(20 * time.Millisecond)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := kafkatest.NewTestCluster(t, kafkatest.WithTopic(tc.topic, 1))
			h := &writtenHook{}
			p := newCoalesceProducer(t, c, tc.topic, h, tc.opts...)
			release := holdAllProduce(t, c)
			wait := sendAsyncN(t, p, tc.topic, 1, 10)
			h.waitWritten(t, 1, "first record")
			waitRest := sendAsyncN(t, p, tc.topic, tc.n, tc.size)
			h.waitWritten(t, 2, tc.name+", first request held")
			release()
			wait()
			waitRest()
		})
	}
}

// TestSend_CoalesceThresholdSendsAtOnce: the Add that brings the ready
// partitions to WithCoalesceBytes ends the wait (it nudges the loop).
func TestSend_CoalesceThresholdSendsAtOnce(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("ct", 1))
	h := &writtenHook{}
	p := newCoalesceProducer(t, c, "ct", h, kpush.WithCoalesceBytes(1000), kpush.WithCoalesceMaxWait(time.Minute))
	release := holdAllProduce(t, c)
	wait := sendAsyncN(t, p, "ct", 1, 10)
	h.waitWritten(t, 1, "first record")
	waitSmall := sendAsyncN(t, p, "ct", 1, 10) // starts a wait
	time.Sleep(20 * time.Millisecond)
	waitRest := sendAsyncN(t, p, "ct", 4, 300) // crosses 1000 bytes
	h.waitWritten(t, 2, "threshold crossed, first request held")
	release()
	wait()
	waitSmall()
	waitRest()
}

// TestSend_CoalesceResendNeverWaits: a partition with a batch to resend is
// sent while another request is in flight, without waiting for it.
func TestSend_CoalesceResendNeverWaits(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("cr", 2))
	h := &writtenHook{}
	p := newCoalesceProducer(t, c, "cr", h, kpush.WithCoalesceBytes(1000),
		kpush.WithCoalesceMaxWait(time.Minute), kpush.WithRetryBackoff(5*time.Millisecond))
	ctx := testCtx(t)
	f := c.Fake()
	goA, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	rejected, held := false, false // the cluster's goroutine only
	f.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		part := pr.Topics[0].Partitions[0].Partition
		switch {
		case part == 0 && !rejected:
			rejected = true
			c.SleepControl(func() { <-goA })
			return rejectProduce(pr, kerr.NotEnoughReplicas, 0), nil, true
		case part == 1 && !held:
			held = true
			c.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	errs := make(chan error, 2)
	cb := func(_ kpush.Result, err error) { errs <- err }
	p.SendAsync(ctx, &kpush.Record{Topic: "cr", Partition: 0, UsePartition: true, Value: []byte("a")}, cb)
	h.waitWritten(t, 1, "request A (partition 0)")
	p.SendAsync(ctx, &kpush.Record{Topic: "cr", Partition: 1, UsePartition: true, Value: make([]byte, 2000)}, cb)
	h.waitWritten(t, 2, "request B (partition 1, over the threshold)")
	close(goA) // A fails retriably; B stays in flight
	h.waitWritten(t, 3, "partition 0's resend while B is held")
	once.Do(func() { close(release) })
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestSend_CoalesceAcksNoneDoesNotStall: with AcksNone nothing is ever
// answered; records still go out without waiting for the cap.
func TestSend_CoalesceAcksNoneDoesNotStall(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("cn", 1))
	h := &writtenHook{}
	p := newCoalesceProducer(t, c, "cn", h, kpush.WithAcks(kpush.AcksNone), kpush.WithCoalesceMaxWait(20*time.Millisecond))
	wait := sendAsyncN(t, p, "cn", 50, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush with AcksNone: %v", err)
	}
	wait()
}

// TestSend_CoalesceResponseEndsWait: any response ends a wait, even with
// another request still in flight, including a response its Send read
// itself (a lent read, internal/wire/ownread.go).
func TestSend_CoalesceResponseEndsWait(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("ce", 2))
	h := &writtenHook{}
	p := newCoalesceProducer(t, c, "ce", h, kpush.WithCoalesceBytes(1000), kpush.WithCoalesceMaxWait(time.Minute))
	f := c.Fake()
	goA, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	heldA, heldB := false, false // the cluster's goroutine only
	f.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		switch part := req.(*kmsg.ProduceRequest).Topics[0].Partitions[0].Partition; {
		case part == 0 && !heldA:
			heldA = true
			c.SleepControl(func() { <-goA })
		case part == 1 && !heldB:
			heldB = true
			c.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	errs := make(chan error, 3)
	go func() { // a Send on an idle sink writes its request and reads the response itself
		_, err := p.Send(context.Background(), &kpush.Record{Topic: "ce", Partition: 0, UsePartition: true, Value: []byte("a")})
		errs <- err
	}()
	h.waitWritten(t, 1, "request A (partition 0)")
	cb := func(_ kpush.Result, err error) { errs <- err }
	p.SendAsync(testCtx(t), &kpush.Record{Topic: "ce", Partition: 1, UsePartition: true, Value: make([]byte, 2000)}, cb)
	h.waitWritten(t, 2, "request B (partition 1, over the threshold)")
	p.SendAsync(testCtx(t), &kpush.Record{Topic: "ce", Partition: 0, UsePartition: true, Value: []byte("c")}, cb)
	time.Sleep(20 * time.Millisecond) // C waits: two requests in flight
	if w := h.written(); len(w) != 2 {
		t.Fatalf("requests written before any response: %v, want A and B only", w)
	}
	close(goA) // A is answered; B stays in flight
	h.waitWritten(t, 3, "C after A's response, B held")
	once.Do(func() { close(release) })
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// retryHook signals each retry.
type retryHook struct{ retried chan struct{} }

func (h *retryHook) OnRetry(kpush.RetryEvent) {
	select {
	case h.retried <- struct{}{}:
	default:
	}
}

// TestSend_CoalesceResendAfterLaterRequestNeverWaits: a batch to resend
// that becomes ready after another request was written (its retry backoff
// ended) is sent without waiting for that request's response. In
// TestSend_CoalesceResendNeverWaits the rejection's response alone ends the
// wait; here no response comes after the latest request, so only the
// resend rule lets it go.
func TestSend_CoalesceResendAfterLaterRequestNeverWaits(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("cl", 3))
	h, rh := &writtenHook{}, &retryHook{retried: make(chan struct{}, 1)}
	p := newCoalesceProducer(t, c, "cl", h, kpush.WithHooks(rh), kpush.WithCoalesceBytes(1000),
		kpush.WithCoalesceMaxWait(time.Minute), kpush.WithRetryBackoff(300*time.Millisecond))
	ctx := testCtx(t)
	f := c.Fake()
	goA, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	rejected := false // the cluster's goroutine only
	f.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		switch part := pr.Topics[0].Partitions[0].Partition; {
		case part == 0 && !rejected:
			rejected = true
			c.SleepControl(func() { <-goA })
			return rejectProduce(pr, kerr.NotEnoughReplicas, 0), nil, true
		case part != 0:
			c.SleepControl(func() { <-release }) // B and D stay in flight
		}
		return nil, nil, false
	})
	errs := make(chan error, 3)
	cb := func(_ kpush.Result, err error) { errs <- err }
	send := func(part int32, size int) {
		p.SendAsync(ctx, &kpush.Record{Topic: "cl", Partition: part, UsePartition: true, Value: make([]byte, size)}, cb)
	}
	send(0, 1)
	h.waitWritten(t, 1, "request A (partition 0)")
	send(1, 2000)
	h.waitWritten(t, 2, "request B (partition 1, over the threshold)")
	close(goA) // A fails retriably and backs off; B stays in flight
	<-rh.retried
	time.Sleep(20 * time.Millisecond) // A's response is handled (well inside the backoff)
	send(2, 2000)
	h.waitWritten(t, 3, "request D (partition 2, over the threshold)")
	// The backoff ends with B and D in flight and no response since D.
	h.waitWritten(t, 4, "partition 0's resend while B and D are held")
	once.Do(func() { close(release) })
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestSend_CoalesceCountsRecordsAddedDuringTheScan: records added while a
// wait sums the ready bytes, before it settles how many more it needs,
// still count towards the threshold. Before the fix they counted in
// neither (the scan had passed their partition, the countdown was not
// set yet), so the wait ran to its cap — here an hour, so the second
// request was never written.
func TestSend_CoalesceCountsRecordsAddedDuringTheScan(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("cs", 1))
	h := &writtenHook{}
	p := newCoalesceProducer(t, c, "cs", h, kpush.WithCoalesceBytes(1000), kpush.WithCoalesceMaxWait(time.Hour))
	release := holdAllProduce(t, c)
	wait := sendAsyncN(t, p, "cs", 1, 10)
	h.waitWritten(t, 1, "first record")
	var (
		once    sync.Once
		bigDone = make(chan error, 1)
	)
	// On the first scan of the wait that the next small record starts,
	// add a record over the threshold: it alone ends the wait.
	p.OnCoalesceScanned(func() {
		once.Do(func() {
			p.SendAsync(context.Background(), &kpush.Record{Topic: "cs", Value: make([]byte, 2000)},
				func(_ kpush.Result, err error) { bigDone <- err })
		})
	})
	waitSmall := sendAsyncN(t, p, "cs", 1, 10)
	h.waitWritten(t, 2, "threshold crossed during the scan, first request held")
	release()
	wait()
	waitSmall()
	if err := <-bigDone; err != nil {
		t.Fatal(err)
	}
}
