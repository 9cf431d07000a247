package sink

import (
	"testing"
	"time"

	"github.com/kpush/kpush/internal/idem"
)

// TestBackoff_NeverPastCap: the retry backoff doubles from RetryBackoff with
// ±20% jitter but never exceeds its cap (1s, or RetryBackoff when larger).
// The cap is what the liveness bounds build on: a partition whose leader is
// reachable sends again within a second of a retriable error, so jitter
// must not push a wait to 1.2s.
func TestBackoff_NeverPastCap(t *testing.T) {
	for _, base := range []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, 2 * time.Second} {
		e := NewEngine(Config{MaxBatchBytes: 1 << 20, RetryBackoff: base, MaxInflight: 5, Acks: -1}, idem.NewManager(false))
		limit := max(time.Second, base)
		for n := 1; n <= 40; n++ {
			want := min(base<<min(n-1, 10), limit)
			for range 200 {
				got := e.backoff(n)
				if lo := want * 8 / 10; got < lo || got > limit || got > want*12/10 {
					t.Fatalf("base %v: backoff(%d) = %v, want within [%v, %v]", base, n, got, lo, min(want*12/10, limit))
				}
			}
		}
	}
}
