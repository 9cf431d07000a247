// Package partitioner chooses the partition of each record: murmur2 like the
// Java client, CRC32 like librdkafka's "consistent" partitioner, sticky for
// keyless records (KIP-794, uniform or adaptive: adaptive.go), and round
// robin.
//
// Goroutines and ownership: this package starts no goroutines. A Picker
// belongs to one topic and is shared by every goroutine sending to it. Its
// mutable state is one atomic word (the sticky partition and the bytes it
// has received, or the round-robin counter), an atomic pointer to an
// immutable availability set, replaced by SetAvailable (the metadata
// goroutine), and for the adaptive strategies a table of per-partition load
// counters (adaptive.go); there are no locks, so there is no lock order.
package partitioner

import (
	"hash/crc32"
	"math/rand/v2"
	"sync/atomic"
)

// Murmur2 is Kafka's Java Utils.murmur2 (seed 0x9747b28c), returning the
// same int32 as Java.
func Murmur2(b []byte) int32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	n := len(b)
	h := seed ^ uint32(n)
	for i := 0; i+4 <= n; i += 4 {
		k := uint32(b[i]) | uint32(b[i+1])<<8 | uint32(b[i+2])<<16 | uint32(b[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := n &^ 3
	switch n & 3 {
	case 3:
		h ^= uint32(b[tail+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[tail+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[tail])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

// Murmur2Partition is the Java DefaultPartitioner/BuiltInPartitioner keyed
// choice: (Murmur2(key) & 0x7fffffff) % n. n must be positive.
func Murmur2Partition(key []byte, n int) int {
	return int(Murmur2(key)&0x7fffffff) % n
}

// CRC32Partition is librdkafka's "consistent" partitioner:
// crc32.ChecksumIEEE(key) % n, an unsigned modulo as in
// rd_kafka_msg_partitioner_consistent. n must be positive.
func CRC32Partition(key []byte, n int) int {
	return int(uint64(crc32.ChecksumIEEE(key)) % uint64(n))
}

// Strategy selects how a Picker chooses partitions.
type Strategy uint8

const (
	// Sticky hashes keyed records with Murmur2Partition (the Java default)
	// and sends keyless records to a uniform sticky partition (KIP-794
	// without the adaptive part).
	Sticky Strategy = iota
	// CRC32 hashes keyed records with CRC32Partition and sends keyless
	// records to a uniform sticky partition, like librdkafka's
	// consistent_random.
	CRC32
	// RoundRobin sends every record, keyed or not, to the next partition
	// in turn.
	RoundRobin
	// Adaptive is Sticky whose keyless switches prefer partitions with less
	// load (KIP-794's adaptive partitioning; see Picker.Counter).
	Adaptive
	// AdaptiveCRC32 is CRC32 with Adaptive's keyless switches.
	AdaptiveCRC32
)

// Picker chooses a partition for each record of one topic. It is safe for
// concurrent use; Pick takes no lock (atomics only) and does not allocate.
type Picker interface {
	// Pick returns a partition in [0, n). key == nil means keyless (an
	// empty non-nil key is a key and hashes like Java's empty byte
	// array). size is the record's approximate encoded size in bytes; the
	// sticky strategy counts it toward switching. n may change between
	// calls; it must be positive, and Pick panics otherwise.
	Pick(key []byte, size int, n int) int
	// SetAvailable tells the picker which partitions have a leader
	// (ok[i] for partition i; partitions beyond len(ok) count as
	// available; nil means all are). Keyless and round-robin picks skip
	// the others while any partition is available, like the Java
	// client's BuiltInPartitioner (KIP-794) and RoundRobinPartitioner;
	// keyed picks ignore it (a key's partition never changes). ok is
	// copied. Safe to call concurrently with Pick.
	SetAvailable(ok []bool)
	// Counter returns partition part's load counter, or nil when the
	// strategy does not weigh load or the partition is not known yet (a
	// partition becomes known through SetAvailable). The caller adds a
	// record's size when it queues the record on part and subtracts it
	// when the record's outcome is delivered; adaptive keyless switches
	// read the counters.
	Counter(part int) *Counter
}

// avail is an immutable availability set.
type avail struct {
	ok []bool  // by partition; beyond the end: available
	up []int32 // the available partitions among ok's, ascending
}

// newAvail returns the set for ok, or nil when every partition is available.
func newAvail(ok []bool) *avail {
	a := &avail{ok: append([]bool(nil), ok...)}
	for i, v := range ok {
		if v {
			a.up = append(a.up, int32(i))
		}
	}
	if len(a.up) == len(ok) {
		return nil
	}
	return a
}

// has reports whether partition part is available.
func (a *avail) has(part int32) bool {
	return a == nil || int(part) >= len(a.ok) || a.ok[part]
}

// choose returns an available partition in [0, n) other than not, chosen
// by r (a random or counter value), or -1 when a is nil or no partition
// is known available. Partitions at or beyond len(a.ok) count as
// available.
func (a *avail) choose(n int, not int32, r uint64) int {
	if a == nil {
		return -1
	}
	// Candidates: a.up below n, plus [len(a.ok), n).
	ups := a.up
	for len(ups) > 0 && int(ups[len(ups)-1]) >= n {
		ups = ups[:len(ups)-1]
	}
	extra := max(n-len(a.ok), 0)
	total := len(ups) + extra
	if total == 0 {
		return -1
	}
	at := func(i int) int32 {
		if i < len(ups) {
			return ups[i]
		}
		return int32(len(a.ok) + i - len(ups))
	}
	if total == 1 {
		return int(at(0))
	}
	i := int(r % uint64(total))
	if at(i) == not {
		// Uniform among the others: skip not by taking a different draw.
		i = (i + 1 + int((r/uint64(total))%uint64(total-1))) % total
	}
	return int(at(i))
}

// NewPicker returns a Picker for one topic. stickyBytes is how many bytes a
// keyless sticky partition receives before the picker switches to another
// partition chosen uniformly at random among the others (when n > 1). A
// record is never split: the record that reaches stickyBytes still goes to
// the current partition and the next keyless record switches. Values below 1
// mean switch after every record; values above 1<<31 are treated as 1<<31.
// RoundRobin ignores stickyBytes. NewPicker panics on an unknown Strategy.
func NewPicker(s Strategy, stickyBytes int) Picker {
	switch s {
	case Sticky:
		return newSticky(Murmur2Partition, stickyBytes)
	case CRC32:
		return newSticky(CRC32Partition, stickyBytes)
	case RoundRobin:
		return &roundRobin{}
	case Adaptive:
		return newAdaptive(newSticky(Murmur2Partition, stickyBytes))
	case AdaptiveCRC32:
		return newAdaptive(newSticky(CRC32Partition, stickyBytes))
	}
	panic("partition: unknown Strategy")
}

// maxStickyBytes bounds the limit so that the 32-bit byte counter keeps
// ample headroom: adds that race past the limit before a switch lands
// cannot carry into the partition half of the packed state.
const maxStickyBytes = 1 << 30

// noPartition marks "no sticky partition yet": the first keyless Pick
// chooses uniformly among all partitions.
const noPartition = -1

// sticky is the Sticky and CRC32 Picker.
type sticky struct {
	keyed func(key []byte, n int) int // Murmur2Partition or CRC32Partition
	limit uint32                      // stickyBytes clamped to [1, maxStickyBytes]
	// state packs the sticky partition (int32, high 32 bits) and the bytes
	// counted toward it (uint32, low 32 bits), so one CompareAndSwap moves
	// both. Read and written by every Pick of a keyless record.
	state atomic.Uint64
	avail atomic.Pointer[avail] // nil: every partition has a leader
	loads *loadTable            // nil unless adaptive
}

func newAdaptive(s *sticky) *sticky {
	s.loads = new(loadTable)
	return s
}

func newSticky(keyed func([]byte, int) int, stickyBytes int) *sticky {
	s := &sticky{keyed: keyed, limit: uint32(min(max(stickyBytes, 1), maxStickyBytes))}
	s.state.Store(pack(noPartition, 0))
	return s
}

func pack(part int32, used uint32) uint64 { return uint64(uint32(part))<<32 | uint64(used) }

func unpack(st uint64) (part int32, used uint32) { return int32(st >> 32), uint32(st) }

// Pick implements Picker.
func (s *sticky) Pick(key []byte, size int, n int) int {
	checkN(n)
	if key != nil {
		return s.keyed(key, n)
	}
	if n == 1 {
		return 0
	}
	// Every record counts at least one byte so a caller passing size 0
	// still switches eventually.
	add := uint64(min(max(int64(size), 1), int64(s.limit)))
	for {
		// One atomic add in the common case: under contention a CAS loop
		// retries, an add never does.
		st := s.state.Add(add)
		part, used := unpack(st)
		av := s.avail.Load()
		valid := part >= 0 && int(part) < n
		if valid && uint64(used)-add < uint64(s.limit) && av.has(part) { // under the limit before this record
			return int(part)
		}
		// The partition is full, not chosen yet, gone after a shrink, or
		// without a leader: move to one with a leader when there is one.
		next := -1
		if s.loads != nil {
			next = s.loads.choose(n, part, av, s.limit, rand.Uint64())
		}
		if next < 0 {
			next = av.choose(n, part, rand.Uint64())
		}
		switch {
		case next >= 0:
		case valid:
			next = rand.IntN(n - 1) // uniform among the n-1 others
			if next >= int(part) {
				next++
			}
		default:
			next = rand.IntN(n)
		}
		if s.state.CompareAndSwap(st, pack(int32(next), uint32(add))) {
			return next
		}
		// Another Pick moved the state on; count this record again there.
	}
}

// SetAvailable implements Picker.
func (s *sticky) SetAvailable(ok []bool) {
	s.avail.Store(newAvail(ok))
	if s.loads != nil {
		s.loads.grow(len(ok))
	}
}

// Counter implements Picker.
func (s *sticky) Counter(part int) *Counter {
	if s.loads == nil {
		return nil
	}
	return s.loads.at(part)
}

// roundRobin is the RoundRobin Picker.
type roundRobin struct {
	next  atomic.Uint64 // records picked so far; every Pick adds one
	avail atomic.Pointer[avail]
}

// Pick implements Picker.
func (r *roundRobin) Pick(_ []byte, _ int, n int) int {
	checkN(n)
	i := r.next.Add(1) - 1
	if av := r.avail.Load(); av != nil {
		if part := av.choose(n, -1, i); part >= 0 {
			return part // in turn among the partitions with a leader
		}
	}
	return int(i % uint64(n))
}

// SetAvailable implements Picker.
func (r *roundRobin) SetAvailable(ok []bool) { r.avail.Store(newAvail(ok)) }

// Counter implements Picker: round robin does not weigh load.
func (r *roundRobin) Counter(int) *Counter { return nil }

func checkN(n int) {
	if n <= 0 {
		panic("partition: Pick with a non-positive partition count")
	}
}
