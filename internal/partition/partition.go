// Package partition chooses partitions for records: murmur2 like the Java
// client, CRC32 like librdkafka, uniform sticky for keyless records
// (KIP-794), and round robin.
//
// Goroutines and ownership: Pickers are shared by every goroutine sending
// to a topic; their state is atomics only (no lock on the send path).
package partition

import (
	"hash/crc32"
	"math"
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
	switch n % 4 {
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

// Murmur2Partition is the Java client's keyed choice:
// (murmur2(key) & 0x7fffffff) % n.
func Murmur2Partition(key []byte, n int) int {
	return int(Murmur2(key)&0x7fffffff) % n
}

// CRC32Partition is librdkafka's "consistent" partitioner:
// crc32(key) % n with the IEEE polynomial.
func CRC32Partition(key []byte, n int) int {
	return int(crc32.ChecksumIEEE(key) % uint32(n))
}

// Strategy selects how a Picker chooses partitions.
type Strategy uint8

const (
	// Sticky: keyed records by murmur2 (Java default); keyless records
	// uniform sticky.
	Sticky Strategy = iota
	// CRC32: keyed records by CRC32Partition; keyless records uniform
	// sticky (like librdkafka's consistent_random).
	CRC32
	// RoundRobin: every record, keyed or not, goes to the next partition.
	RoundRobin
)

// Picker chooses a partition for each record of one topic. Safe for
// concurrent use; no lock and no allocation per Pick.
type Picker interface {
	// Pick returns a partition in [0, n). key == nil means keyless (an
	// empty non-nil key is a key). size is the record's approximate
	// encoded size; the sticky strategy counts it toward switching.
	Pick(key []byte, size int, n int) int
}

// NewPicker returns a Picker for one topic. stickyBytes is how many bytes a
// keyless sticky partition receives before the picker switches to another
// partition chosen uniformly among the others.
func NewPicker(s Strategy, stickyBytes int) Picker {
	switch s {
	case CRC32:
		return newSticky(CRC32Partition, stickyBytes)
	case RoundRobin:
		return &roundRobin{}
	default:
		return newSticky(Murmur2Partition, stickyBytes)
	}
}

func newSticky(hash func([]byte, int) int, stickyBytes int) *sticky {
	s := &sticky{hash: hash, limit: int64(max(stickyBytes, 1))}
	s.state.Store(pack(noPartition, 0))
	return s
}

// noPartition is larger than any partition count: the first keyless Pick
// chooses one at random.
const noPartition = math.MaxInt32

type sticky struct {
	hash  func([]byte, int) int
	limit int64
	// state packs the sticky partition (high 32 bits) and the bytes sent
	// to it (low 32 bits) so one CAS switches both.
	state atomic.Uint64
}

func pack(part int32, bytes uint32) uint64 { return uint64(uint32(part))<<32 | uint64(bytes) }

func (s *sticky) Pick(key []byte, size int, n int) int {
	if key != nil {
		return s.hash(key, n)
	}
	if n <= 1 {
		return 0
	}
	for {
		st := s.state.Load()
		part, used := int(int32(st>>32)), int64(uint32(st))
		if part < n && used < s.limit {
			add := uint32(min(int64(size), s.limit))
			if s.state.CompareAndSwap(st, pack(int32(part), uint32(used)+add)) {
				return part
			}
			continue
		}
		// Switch to another partition, uniformly among the others.
		next := rand.IntN(n - 1)
		if part < n && next >= part {
			next++
		} else if part >= n {
			next = rand.IntN(n)
		}
		if s.state.CompareAndSwap(st, pack(int32(next), uint32(min(int64(size), s.limit)))) {
			return next
		}
	}
}

type roundRobin struct{ next atomic.Uint64 }

func (r *roundRobin) Pick(_ []byte, _ int, n int) int {
	return int((r.next.Add(1) - 1) % uint64(n))
}
