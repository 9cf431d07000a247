package kprom

import (
	"strconv"
	"testing"

	"github.com/kpush/kpush"
)

// TestSeriesCache_Bounded: the copy-on-write cache stops growing at
// maxRecordCache keys (filling it copies the map per key, O(n²)); keys past
// it still get their series, looked up per call.
func TestSeriesCache_Bounded(t *testing.T) {
	m := New()
	for i := range maxRecordCache + 100 {
		k := recordKey{topic: "t" + strconv.Itoa(i), cause: "other", outcome: kpush.OutcomeNotWritten}
		if s := m.series(k); s == nil || s.records == nil || s.bytes == nil {
			t.Fatalf("series(%v) = %v", k, s)
		}
	}
	if n := len(*m.recordCache.Load()); n != maxRecordCache {
		t.Fatalf("cache holds %d keys, want the cap %d", n, maxRecordCache)
	}
}
