package kpush_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestSendAsync_CallbackOrderAfterRetriedWrite: record A's request is
// appended by the broker but answered NOT_ENOUGH_REPLICAS_AFTER_APPEND
// (kfake appends first), after record B's request was pipelined behind it;
// B is then acknowledged at once, and A only by its retry (a duplicate).
// B's callback must still run after A's: SendAsync promises callbacks in
// send order per partition.
func TestSendAsync_CallbackOrderAfterRetriedWrite(t *testing.T) {
	const topic = "cbretry"
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic(topic, 1))
	f := c.Fake()
	p := newProducer(t, c, kpush.WithPartitioner(kpush.ManualPartitioner), kpush.WithRetryBackoff(5*time.Millisecond))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: topic, Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}

	var armed atomic.Pointer[kmsg.ProduceRequest]
	var arm, faulted atomic.Bool
	arm.Store(true)
	f.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotEnoughReplicasAfterAppend, Count: -1,
		When: func(r kmsg.Request) bool {
			pr, ok := r.(*kmsg.ProduceRequest)
			hit := ok && pr == armed.Load()
			if hit {
				faulted.Store(true)
			}
			return hit
		}})
	done := make(chan struct{})
	defer close(done)
	gotA := make(chan struct{})
	f.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		if !arm.CompareAndSwap(true, false) {
			return nil, nil, false
		}
		armed.Store(r.(*kmsg.ProduceRequest)) // A: appended, then the error
		close(gotA)
		// Answer A only once B's request is on the wire behind it (bounded
		// wait, checked every millisecond).
		c.SleepControl(func() {
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			capT := time.NewTimer(5 * time.Second)
			defer capT.Stop()
			for p.Stats().InflightRequests < 2 {
				select {
				case <-tick.C:
				case <-capT.C:
					return
				case <-done:
					return
				}
			}
		})
		return nil, nil, false
	})

	var mu sync.Mutex
	var order []string
	all := make(chan struct{})
	var n atomic.Int32
	for _, v := range []string{"a", "b"} {
		if v == "b" { // B goes in a request of its own, behind A's
			select {
			case <-gotA:
			case <-time.After(10 * time.Second):
				t.Fatal("A's request did not reach the broker")
			}
		}
		p.SendAsync(ctx, &kpush.Record{Topic: topic, Value: []byte(v)}, func(_ kpush.Result, err error) {
			if err != nil {
				t.Errorf("%s: %v", v, err)
			}
			mu.Lock()
			order = append(order, v)
			mu.Unlock()
			if n.Add(1) == 2 {
				close(all)
			}
		})
	}
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		t.Fatal("callbacks did not all run")
	}
	if !faulted.Load() {
		t.Fatal("A's request was never answered with the injected error")
	}
	mu.Lock()
	got := strings.Join(order, ",")
	mu.Unlock()
	if got != "a,b" {
		t.Fatalf("callback order %s, want a,b: B (acknowledged first) ran before A (acknowledged by its retry)", got)
	}
}
