package kpush_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// blockAnswer blocks the first OnRequestAnswered after it is armed until
// release is closed.
type blockAnswer struct {
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (b *blockAnswer) OnRequestAnswered(kpush.RequestAnsweredEvent) {
	if b.armed.CompareAndSwap(true, false) {
		close(b.entered)
		<-b.release
	}
}

// TestHooks_BlockingHookDelaysOnly: a hook that blocks holds up its
// goroutine (here the broker's response reader) and nothing else: a Send
// with a deadline still returns at its deadline, Flush with one too, and
// once the hook returns the held record is acknowledged, nothing lost,
// and Close completes (issue 16: a blocking hook is documented
// behaviour, not a deadlock).
func TestHooks_BlockingHookDelaysOnly(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("hk", 1))
	h := &blockAnswer{entered: make(chan struct{}), release: make(chan struct{})}
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...), kpush.WithHooks(h))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "hk", Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	h.armed.Store(true)
	held := make(chan error, 1)
	p.SendAsync(ctx, &kpush.Record{Topic: "hk", Value: []byte("held")}, func(_ kpush.Result, err error) { held <- err })
	select {
	case <-h.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the request hook was never called")
	}

	const wait = 200 * time.Millisecond
	for _, op := range []struct {
		name string
		run  func(context.Context) error
	}{
		{"Send", func(ctx context.Context) error {
			_, err := p.Send(ctx, &kpush.Record{Topic: "hk", Value: []byte("behind")})
			return err
		}},
		{"Flush", p.Flush},
	} {
		dctx, cancel := context.WithTimeout(ctx, wait)
		t0 := time.Now()
		err := op.run(dctx)
		took := time.Since(t0)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || took > wait+5*time.Second {
			t.Errorf("%s while a hook blocks the reader: %v after %v, want its deadline's error at its deadline", op.name, err, took)
		}
	}
	select {
	case err := <-held:
		t.Fatalf("the held record's outcome came while the hook blocked its answer: %v", err)
	default:
	}

	close(h.release)
	select {
	case err := <-held:
		if err != nil {
			t.Fatalf("the held record after the hook returned: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no outcome for the held record after the hook returned")
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	recs, err := c.ReadAll(ctx, "hk")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		seen[string(r.Value)] = true
	}
	if !seen["warm"] || !seen["held"] {
		t.Errorf("log has %v, want warm and held", seen)
	}
}
