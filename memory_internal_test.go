package kpush

import (
	"testing"
	"unsafe"
)

// TestDefaults_BookkeepingFitsMemorySlack: at the default limits, the
// engine's own state for a full buffer of records (one syncWaiter per
// record, or SendAsync's slabs of asyncRecords at their cap, each record
// embedding its sink.Pending, plus a pointer per record in a partition
// queue) fits in the 20 % that docs/design.md allows the
// client's memory above the byte limit. The byte limit counts record
// bytes only, so a record limit far above the byte limit's worth of small
// records let an async sender hold several times the limit (issue 15:
// 229 MiB resident for a 64 MiB limit at the old 1,048,576 records).
func TestDefaults_BookkeepingFitsMemorySlack(t *testing.T) {
	c := defaultConfig()
	ptr := int64(unsafe.Sizeof(uintptr(0)))
	var slabs asyncSlabs
	slabs.init(nil, c.maxBufRecords) // SendAsync's records: at most slabs.max slabs (async.go)
	held := max(c.maxBufRecords*(int64(unsafe.Sizeof(syncWaiter{}))+ptr),
		int64(slabs.max)*int64(unsafe.Sizeof(asyncSlab{}))+c.maxBufRecords*ptr)
	per := held / c.maxBufRecords
	slack := c.maxBufBytes / 5
	if held > slack {
		t.Fatalf("%d records × %d B of bookkeeping = %.1f MiB, over the 20%% slack (%.1f MiB) above the %d MiB byte limit",
			c.maxBufRecords, per, float64(held)/(1<<20), float64(slack)/(1<<20), c.maxBufBytes>>20)
	}
}
