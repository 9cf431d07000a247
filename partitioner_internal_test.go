package kpush

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/kafkatest"
)

// loadsLeft returns the bytes still counted on every partition's load
// counter of topic name (adaptive keyless partitioning).
func loadsLeft(t *testing.T, p *Producer, name string) []int64 {
	t.Helper()
	tp := (*p.topics.Load())[name]
	if tp == nil {
		t.Fatalf("no topic %q", name)
	}
	var out []int64
	for i := range *tp.parts.Load() {
		c := tp.picker.Counter(i)
		if c == nil {
			t.Fatalf("partition %d has no load counter", i)
		}
		out = append(out, c.Load())
	}
	return out
}

func wantNoLoad(t *testing.T, p *Producer, name, when string) {
	t.Helper()
	for i, l := range loadsLeft(t, p, name) {
		if l != 0 {
			t.Errorf("%s: partition %d still counts %d bytes of load", when, i, l)
		}
	}
}

// TestLoadCounters_ReturnToZero: every way a record leaves (acknowledged,
// Send abandoned in flight, Send canceled while buffered) takes its bytes
// off its partition's load counter; a leaked count would keep a healthy
// partition looking backed up forever.
func TestLoadCounters_ReturnToZero(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("lc", 3))
	setHold, arrived := holdProduces(c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	newP := func(opts ...Option) *Producer {
		p, err := New(append([]Option{WithBrokers(c.Addrs()...)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close(context.Background()) })
		return p
	}

	// Acknowledged, sync and async, keyed and keyless.
	p := newP()
	var wg sync.WaitGroup
	for i := range 300 {
		rec := &Record{Topic: "lc", Value: make([]byte, 100)}
		if i%3 == 0 {
			rec.Key = []byte{byte(i)}
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := p.Send(ctx, rec); err != nil {
				t.Error(err)
			}
		}()
		p.SendAsync(ctx, rec, func(_ Result, err error) {
			if err != nil {
				t.Error(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	wantNoLoad(t, p, "lc", "after acknowledgements")

	// A Send abandoned while its request is held by the broker.
	release := make(chan struct{})
	setHold(release)
	actx, acancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := p.Send(actx, &Record{Topic: "lc", Value: []byte("abandoned")})
		errc <- err
	}()
	select {
	case <-arrived:
	case <-ctx.Done():
		t.Fatal("the held request never arrived")
	}
	acancel()
	if err := <-errc; !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("abandoned Send: %v, want ErrOutcomeUnknown", err)
	}
	setHold(nil)
	close(release)
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// The abandoned record counts until its batch is done (Notify takes
	// it off; Flush waits for that).
	wantNoLoad(t, p, "lc", "after an abandoned Send")

	// Sends canceled while their records wait out a long linger.
	q := newP(WithLinger(time.Minute))
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer dcancel()
			if _, err := q.Send(dctx, &Record{Topic: "lc", Value: []byte("canceled")}); !errors.Is(err, ErrNotWritten) {
				t.Errorf("canceled Send: %v, want ErrNotWritten", err)
			}
		}()
	}
	wg.Wait()
	wantNoLoad(t, q, "lc", "after canceled Sends")

	// SendCancelable: handles acknowledged, then handles canceled while
	// their records wait out the linger.
	for range 50 {
		wg.Add(1)
		p.SendCancelable(ctx, &Record{Topic: "lc", Value: make([]byte, 100)}, func(_ Result, err error) {
			if err != nil {
				t.Error(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	wantNoLoad(t, p, "lc", "after acknowledged SendCancelable handles")
	var hs []*SendHandle
	for range 20 {
		wg.Add(1)
		hs = append(hs, q.SendCancelable(ctx, &Record{Topic: "lc", Value: []byte("canceled")}, func(_ Result, err error) {
			if !errors.Is(err, ErrNotWritten) {
				t.Errorf("canceled handle: %v, want ErrNotWritten", err)
			}
			wg.Done()
		}))
	}
	for _, h := range hs {
		h.Cancel()
	}
	wg.Wait()
	wantNoLoad(t, q, "lc", "after canceled SendCancelable handles")
}

// holdProduces lets a test hold the cluster's produce requests: after
// setHold(ch) with a non-nil ch, each produce request waits until ch is
// closed (arrived gets a signal when one does); setHold(nil) lets them pass.
func holdProduces(c *kafkatest.Cluster) (setHold func(chan struct{}), arrived chan struct{}) {
	f := c.Fake()
	var mu sync.Mutex
	var hold chan struct{}
	arrived = make(chan struct{}, 1)
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		mu.Lock()
		h := hold
		mu.Unlock()
		if h != nil {
			select {
			case arrived <- struct{}{}:
			default:
			}
			c.SleepControl(func() { <-h })
		}
		return nil, nil, false
	})
	return func(ch chan struct{}) { mu.Lock(); hold = ch; mu.Unlock() }, arrived
}
