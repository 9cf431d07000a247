package clock

import (
	"sync"
	"testing"
	"time"
)

// TestNow_TSCBoundedByMono: once calibrated, TSC readings are never ahead
// of a Mono read after them, lag one read before them by microseconds at
// most, and never go back on a goroutine, also across rebases.
func TestNow_TSCBoundedByMono(t *testing.T) {
	if !hasTSC {
		t.Skip("no invariant TSC")
	}
	var c Clock
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := int64(-1)
			for end := Mono() + int64(400*time.Millisecond); ; {
				before := Mono()
				mono, _ := c.Now()
				after := Mono()
				if mono > after {
					t.Errorf("goroutine %d: reading %d ahead of Mono read after it (%d) by %v", g, mono, after, time.Duration(mono-after))
					return
				}
				if lag := before - mono; lag > int64(20*time.Microsecond) {
					t.Errorf("goroutine %d: reading lags Mono read before it by %v", g, time.Duration(lag))
					return
				}
				if mono < last {
					t.Errorf("goroutine %d: reading went back by %v", g, time.Duration(last-mono))
					return
				}
				last = mono
				if after > end {
					return
				}
			}
		}()
	}
	wg.Wait()
	if c.tsc.limit.Load() == 0 {
		t.Fatal("not calibrated after 400 ms: the fast path was never taken")
	}
}

// BenchmarkMono is one Mono, the read Clock.Now's TSC path replaces
// (BenchmarkNow, clock_test.go, calibrates within its first 100 ms).
func BenchmarkMono(b *testing.B) {
	for b.Loop() {
		Mono()
	}
}
