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
	for g := range 8 {
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

// calibrated returns a Clock whose TSC path is calibrated.
func calibrated(t *testing.T) *Clock {
	t.Helper()
	if !hasTSC {
		t.Skip("no invariant TSC")
	}
	c := &Clock{}
	for end := Mono() + 2*calibrateMin; Mono() < end && c.tsc.limit.Load() == 0; {
		c.Now()
	}
	if c.tsc.limit.Load() == 0 {
		t.Fatal("not calibrated after 200 ms")
	}
	return c
}

// TestTSC_RebaseNotBelowOldBase: a rebase that reads Mono below the old
// base's extrapolation keeps the extrapolation, so a caller whose last
// reading came from the old base does not go back.
func TestTSC_RebaseNotBelowOldBase(t *testing.T) {
	c := calibrated(t)
	b := &c.tsc
	// An expired base (its TSC a limit back) 1 ms ahead of Mono, as a
	// base whose rate ran fast would be.
	ahead := Mono() + int64(time.Millisecond)
	b.seq.Add(1)
	b.mono.Store(ahead)
	b.tsc.Store(rdtsc() - b.limit.Load())
	b.seq.Add(1)
	for range 100 { // some pairs may be unclean (preempted): they extrapolate too
		if got := b.read(); got < ahead {
			t.Fatalf("slow read %d below the old base %d (by %v)", got, ahead, time.Duration(ahead-got))
		}
	}
}

// TestTSC_LockedReadWaits: a slow reading that finds another caller
// rebasing waits for it and reads the new base, rather than returning
// Mono (which may be below the new base's readings).
func TestTSC_LockedReadWaits(t *testing.T) {
	c := calibrated(t)
	b := &c.tsc
	b.seq.Add(1) // this test holds the lock: an expired base, being rewritten
	b.tsc.Store(rdtsc() - 2*b.limit.Load())
	got := make(chan int64, 1)
	go func() { got <- b.read() }()
	time.Sleep(10 * time.Millisecond) // let read find the lock held
	ahead := Mono() + int64(time.Millisecond)
	b.mono.Store(ahead) // the rewrite: a base 1 ms ahead of Mono, fresh
	b.tsc.Store(rdtsc())
	b.seq.Add(1)
	select {
	case m := <-got:
		if m < ahead {
			t.Fatalf("read while locked returned %d, below the base written meanwhile (%d) by %v", m, ahead, time.Duration(ahead-m))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read still waiting 10 s after the lock was released")
	}
}
