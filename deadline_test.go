package kpush_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// deadlineSlack is defined in invariants_test.go (one bound for the suite).

// TestDeliveryTimeout_IsABound: the broker stops answering produce
// requests (its connections stay open, like a SIGSTOPped broker). Records
// in flight must end ErrOutcomeUnknown with cause ErrDeliveryTimeout at
// their deadline — not when the request times out much later — and
// records still buffered behind them fail definitely at theirs.
func TestDeliveryTimeout_IsABound(t *testing.T) {
	const (
		topic    = "deadline"
		delivery = time.Second
		request  = 500 * time.Millisecond // the wire gives up after 5.5s
	)
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic(topic, 3))
	p := newProducer(t, c, kpush.WithDeliveryTimeout(delivery), kpush.WithRequestTimeout(request))
	ctx := testCtx(t)
	for range 3 { // metadata and producer ID loaded, a batch acknowledged per partition
		if _, err := p.Send(ctx, &kpush.Record{Topic: topic, Value: []byte("warm")}); err != nil {
			t.Fatal(err)
		}
	}
	f := c.Fake()
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		<-release
		return nil, nil, false
	})
	defer unblock() // before the cluster's Close (a t.Cleanup)

	type outcome struct {
		late time.Duration
		err  error
	}
	const n = 40
	outcomes := make(chan outcome, 2*n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			start := time.Now()
			_, err := p.Send(context.Background(), &kpush.Record{Topic: topic, Key: []byte{byte(i)}, Value: []byte("sync")})
			outcomes <- outcome{time.Since(start) - delivery, err}
		}()
		go func() {
			start := time.Now()
			p.SendAsync(context.Background(), &kpush.Record{Topic: topic, Key: []byte{byte(i)}, Value: []byte("async")}, func(_ kpush.Result, err error) {
				outcomes <- outcome{time.Since(start) - delivery, err}
				wg.Done()
			})
		}()
	}
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		t.Fatal("outcomes missing after 30s")
	}
	close(outcomes)
	var unknown, definite int
	var worst time.Duration
	for o := range outcomes {
		worst = max(worst, o.late)
		switch {
		case o.err == nil:
			t.Errorf("acknowledged while the broker does not answer")
		case !errors.Is(o.err, kpush.ErrDeliveryTimeout):
			t.Errorf("err %v, want ErrDeliveryTimeout", o.err)
		case errors.Is(o.err, kpush.ErrOutcomeUnknown):
			unknown++
		default:
			definite++
		}
		if o.late > deadlineSlack() {
			t.Errorf("outcome %v after its deadline (slack %v): %v", o.late, deadlineSlack(), o.err)
		}
	}
	t.Logf("%d in flight (unknown), %d buffered (not written); latest outcome %v after its deadline", unknown, definite, worst)
	if unknown == 0 {
		t.Fatal("no record was in flight at its deadline: the test did not exercise in-flight expiry")
	}

	// The held requests are answered late: their outcome is dropped, and
	// every partition goes on sending (sequence state intact).
	unblock()
	for part := range 3 {
		if _, err := p.Send(ctx, &kpush.Record{Topic: topic, Key: []byte{byte(part)}, Value: []byte("after")}); err != nil {
			t.Fatalf("after the broker answers again: %v", err)
		}
	}
	if got, err := c.ReadAll(ctx, topic); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("%d records in the log (3 warm-up, 3 after, and whichever expired ones the broker wrote)", len(got))
	}
}

// TestDeliveryTimeout_CountsFromTheCall: the delivery deadline counts from
// the SendAsync call, not from when the record was buffered: a sender that
// waits inside SendAsync before its record is buffered (here for the slab
// lock, which a loaded machine can leave held while it deschedules the
// holder) still gets its outcome by the call plus the delivery timeout
// plus deadlineSlack.
func TestDeliveryTimeout_CountsFromTheCall(t *testing.T) {
	hold := deadlineSlack() + 200*time.Millisecond // longer than the slack
	delivery := 4 * hold                           // the reaper looks at least every delivery/4
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	p := newProducer(t, c, kpush.WithDeliveryTimeout(delivery), kpush.WithRequestTimeout(hold))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "t"}); err != nil { // metadata loaded; Send takes no slab
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	holdProduce(c, release)
	unlock := p.LockAsyncSlabs() // the first SendAsync needs a slab
	type outcome struct {
		took time.Duration
		err  error
	}
	done := make(chan outcome, 1)
	start := time.Now()
	go p.SendAsync(ctx, &kpush.Record{Topic: "t"}, func(_ kpush.Result, err error) {
		done <- outcome{time.Since(start), err}
	})
	wait := time.NewTimer(hold) // how long the sender waits for the lock
	<-wait.C
	unlock()
	o := <-done
	checkErr(t, o.err, kpush.ErrOutcomeUnknown, kpush.ErrDeliveryTimeout)
	if bound := delivery + deadlineSlack(); o.took > bound {
		t.Errorf("outcome %v after SendAsync was called, want at most %v (delivery timeout + slack): the deadline counted from after the %v wait", o.took, bound, hold)
	}
	if o.took < delivery {
		t.Errorf("outcome %v after SendAsync was called, before the %v delivery timeout", o.took, delivery)
	}
}
