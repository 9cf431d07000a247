package clock

import (
	"sync"
	"testing"
	"time"
)

func TestNow_TracksWallClock(t *testing.T) {
	var c Clock
	for range 1000 {
		_, wall := c.Now()
		if d := time.Duration(time.Now().UnixNano() - wall); d < -time.Millisecond || d > 50*time.Millisecond {
			t.Fatalf("wall clock off by %v", d)
		}
	}
}

func TestNow_MonotonicNeverGoesBack(t *testing.T) {
	var c Clock
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := int64(-1)
			for range 10000 {
				mono, _ := c.Now()
				if mono < last {
					t.Errorf("monotonic clock went back: %d after %d", mono, last)
					return
				}
				last = mono
			}
		}()
	}
	wg.Wait()
}

func TestNow_Rebases(t *testing.T) {
	var c Clock
	c.base.Store(&base{mono: Mono() - 2*rebaseEvery, wall: 0}) // a stale, wrong base
	_, wall := c.Now()
	if d := time.Duration(time.Now().UnixNano() - wall); d < 0 || d > time.Second {
		t.Fatalf("stale base not replaced: off by %v", d)
	}
}

func BenchmarkNow(b *testing.B) {
	var c Clock
	for b.Loop() {
		c.Now()
	}
}

func BenchmarkTimeNow(b *testing.B) {
	for b.Loop() {
		time.Now()
	}
}
