package buffer_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kpush/kpush/internal/buffer"
)

func TestLimiter_Stress(t *testing.T) {
	const (
		workers  = 16
		maxBytes = 64
		maxRecs  = 4
	)
	iters := 10_000
	if testing.Short() {
		iters = 1_000
	}
	l := buffer.New(maxBytes, maxRecs)
	stopSampling := make(chan struct{})
	var samples atomic.Int64
	sampleErr := make(chan string, 1)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSampling:
				return
			default:
			}
			b, r := l.Used()
			samples.Add(1)
			runtime.Gosched() // share the CPU with the workers when GOMAXPROCS is 1
			// The one exception: a single record larger than the limit,
			// admitted into an empty buffer.
			if r > maxRecs || r < 0 || b < 0 || (b > maxBytes && r != 1) {
				select {
				case sampleErr <- fmt.Sprintf("Used() = (%d bytes, %d records) beyond limits", b, r):
				default:
				}
				return
			}
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range iters {
				n := int64(1 + rng.IntN(16))
				if rng.IntN(200) == 0 {
					n = maxBytes + 10 // oversized: only into an empty buffer
				}
				if rng.IntN(4) == 0 {
					if !l.TryReserve(n) {
						continue
					}
				} else if err := l.Reserve(context.Background(), n, nil, errStopped); err != nil {
					errs <- err
					return
				}
				if rng.IntN(8) == 0 {
					runtime.Gosched()
				}
				l.Release(n)
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case <-finished:
	case <-timer.C:
		close(stopSampling)
		b, r := l.Used()
		t.Fatalf("stress workers stuck (lost wake-up?); Used() = (%d, %d)", b, r)
	}
	close(stopSampling)
	<-sampled
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	select {
	case msg := <-sampleErr:
		t.Fatal(msg)
	default:
	}
	checkUsed(t, l, 0, 0)
	if !l.TryReserve(maxBytes) {
		t.Fatal("TryReserve(maxBytes) failed on an idle limiter: a waiter leaked")
	}
	t.Logf("%d samples of Used()", samples.Load())
}

func TestReserveRelease_FastPathNoAllocs(t *testing.T) {
	l := buffer.New(1<<20, 1<<10)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		if err := l.Reserve(ctx, 100, nil, errStopped); err != nil {
			t.Fatal(err)
		}
		l.Release(100)
	})
	if allocs != 0 {
		t.Fatalf("Reserve+Release fast path: %v allocs, want 0", allocs)
	}
}

func BenchmarkReserveRelease(b *testing.B) {
	l := buffer.New(1<<30, 1<<20)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Reserve(ctx, 100, nil, errStopped); err != nil {
				b.Error(err)
				return
			}
			l.Release(100)
		}
	})
}
