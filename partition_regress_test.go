package kpush_test

// End-to-end regressions for the partition state machine (issue 11),
// against the fake cluster.

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

// Defect 2: Sends whose ctx ends while their partition is stuck must not
// let the producer hold more than WithMaxBufferedBytes, and Stats must
// count what is held. Before the fix a canceled Send released its space
// at once while its record stayed queued in the partition.
func TestSend_CanceledRecordsStayWithinMemoryBound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	f := c.Fake()
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		select {
		case arrived <- struct{}{}:
		default:
		}
		<-release // every produce request is held: the partition is stuck
		return nil, nil, false
	})
	defer close(release) // before the cluster's Close (a t.Cleanup)
	const bound = 32 << 10
	p := newProducer(t, c, kpush.WithMaxBufferedBytes(bound))
	held := make(chan error, 1)
	p.SendAsync(ctx, &kpush.Record{Topic: "t", Value: []byte("in flight")}, func(_ kpush.Result, err error) { held <- err })
	select {
	case <-arrived: // the first batch is in flight; until it is acknowledged nothing else is sent
	case <-ctx.Done():
		t.Fatal("no produce request arrived")
	}

	value := make([]byte, 100)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var maxHeld int64
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				sctx, scancel := context.WithTimeout(ctx, 5*time.Millisecond)
				_, err := p.Send(sctx, &kpush.Record{Topic: "t", Value: value})
				scancel()
				if !errors.Is(err, kpush.ErrNotWritten) || !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Send: %v, want ErrNotWritten wrapping DeadlineExceeded", err)
					return
				}
				h := p.HeldBytes()
				mu.Lock()
				maxHeld = max(maxHeld, h)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if maxHeld > bound {
		t.Errorf("partitions held %d bytes of canceled records, WithMaxBufferedBytes is %d", maxHeld, bound)
	}
	if h, st := p.HeldBytes(), p.Stats().BytesBuffered; h > st {
		t.Errorf("Stats().BytesBuffered = %d, but %d bytes are held", st, h)
	}
}
