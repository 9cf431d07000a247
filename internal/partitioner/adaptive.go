package partitioner

// Adaptive keyless partitioning (KIP-794's partition load statistics).
//
// Goroutines and ownership: none started here. A loadTable belongs to one
// sticky Picker. Its slice of counters is copy-on-write behind an atomic
// pointer and replaced only by SetAvailable (the metadata goroutine); a
// Counter is never replaced, so a record keeps the counter it added to
// even when the table grows. Send goroutines add to counters and read them
// when switching partitions; outcome goroutines subtract. No locks.

import "sync/atomic"

// Counter is one partition's load: the bytes of records sent to it whose
// outcome is not delivered yet (buffered or in flight). The producer adds a
// record's size when it queues the record and subtracts it when the
// record's outcome is delivered or the record is withdrawn before being
// sent (a record whose sender gave up while it was in flight still counts
// until its batch is done). Safe for concurrent use.
type Counter struct {
	n atomic.Int64
	_ [56]byte // one cache line per partition: partitions are updated by different goroutines
}

// Add adds d (negative to subtract) to the load.
func (c *Counter) Add(d int64) { c.n.Add(d) }

// Load returns the current load in bytes.
func (c *Counter) Load() int64 { return c.n.Load() }

// loadTable is a topic's counters by partition.
type loadTable struct {
	counters atomic.Pointer[[]*Counter]
}

// grow makes sure there is a counter for every partition below n; only the
// metadata goroutine calls it.
func (l *loadTable) grow(n int) {
	old := l.counters.Load()
	if old != nil && len(*old) >= n {
		return
	}
	var cs []*Counter
	if old != nil {
		cs = append(cs, *old...)
	}
	for len(cs) < n {
		cs = append(cs, new(Counter))
	}
	l.counters.Store(&cs)
}

// at returns partition part's counter, or nil before the table knows it.
func (l *loadTable) at(part int) *Counter {
	cs := l.counters.Load()
	if cs == nil || part < 0 || part >= len(*cs) {
		return nil
	}
	return (*cs)[part]
}

// choose picks the next sticky partition among the available ones in
// [0, n) other than not, weighted like the Java BuiltInPartitioner's
// partition load stats: a partition's load is counted in whole sticky
// batches (limit bytes) and its weight is maxLoad - load + 1, so a
// partition whose broker is backed up gets picked less the further behind it
// is, and partitions within a batch of each other are equally likely. It
// returns -1 when the table does not cover n, no candidate exists, or
// every candidate has the same load (the caller then picks uniformly). r
// is a random value. It does not allocate.
func (l *loadTable) choose(n int, not int32, av *avail, limit uint32, r uint64) int {
	cs := l.counters.Load()
	if cs == nil || len(*cs) < n {
		return -1
	}
	ctr := (*cs)[:n]
	skip := int(not)
	count, minQ, maxQ := 0, int64(-1), int64(0)
	for i := range ctr {
		if !candidate(av, i, skip) {
			continue
		}
		q := max(ctr[i].Load(), 0) / int64(limit)
		count++
		maxQ = max(maxQ, q)
		if minQ < 0 || q < minQ {
			minQ = q
		}
	}
	if count == 0 || minQ == maxQ {
		return -1
	}
	var sum uint64
	for i := range ctr {
		if candidate(av, i, skip) {
			sum += uint64(maxQ - min(max(ctr[i].Load(), 0)/int64(limit), maxQ) + 1)
		}
	}
	pick := r % sum
	last := -1
	for i := range ctr {
		if !candidate(av, i, skip) {
			continue
		}
		w := uint64(maxQ - min(max(ctr[i].Load(), 0)/int64(limit), maxQ) + 1)
		if pick < w {
			return i
		}
		pick -= w
		last = i
	}
	return last // loads moved between the passes
}

// candidate reports whether partition i may be switched to: available and
// not skip.
func candidate(av *avail, i, skip int) bool { return i != skip && av.has(int32(i)) }
