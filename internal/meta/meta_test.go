package meta

import (
	"testing"
	"time"
)

// TestRefresher_BackoffSchedule: triggered refreshes back off from
// MinInterval doubling to MaxInterval, each within ±20% jitter (the
// request-rate bounds in storm_test.go are derived from this schedule).
func TestRefresher_BackoffSchedule(t *testing.T) {
	r := Refresher{MinInterval: 100 * time.Millisecond}
	r.Init()
	if r.MaxInterval != time.Second {
		t.Fatalf("default MaxInterval %v, want 1s", r.MaxInterval)
	}
	for n, want := range map[int]time.Duration{1: 100, 2: 200, 3: 400, 4: 800, 5: 1000, 6: 1000, 40: 1000} {
		want *= time.Millisecond
		for range 100 {
			got := r.Backoff(n)
			if lo, hi := want*8/10, want*12/10; got < lo || got > hi {
				t.Fatalf("Backoff(%d) = %v, want within [%v, %v]", n, got, lo, hi)
			}
		}
	}
}
