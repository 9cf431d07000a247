package partitioner

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// librdkafka's tests/0048-partitioner.c keys (the 2nd is "" and the 3rd is
// the unaligned "23456").
const longKey = "this is another string with more length to it perhaps"

func TestMurmur2_KnownVectors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want int32
	}{
		// Kafka's UtilsTest.testMurmur2.
		{"java 21", []byte("21"), -973932308},
		{"java foobar", []byte("foobar"), -790332482},
		{"java long", []byte("a-little-bit-long-string"), -985981536},
		{"java longer", []byte("a-little-bit-longer-string"), -1486304829},
		{"java longest", []byte("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58897971},
		{"java abc bytes", []byte{'a', 'b', 'c'}, 479470107},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Murmur2(tc.in); got != tc.want {
				t.Fatalf("Murmur2(%q) = %d, want %d", tc.in, got, tc.want)
			}
		})
	}
}

// librdkafka's 0048-partitioner.c lists Murmur2(key) & 0x7fffffff for its
// keys, computed with the Java client (tests/java/Murmur2Cli).
func TestMurmur2Partition_LibrdkafkaVectors(t *testing.T) {
	for _, tc := range []struct {
		key      string
		positive uint32
	}{
		{"", 0x106e08d9},
		{"23456", 0x058d780f},
		{longKey, 0x4f7703da},
		{"hejsan", 0x5ec19395},
	} {
		for _, n := range []int{1, 7, 17, math.MaxInt32} {
			t.Run(fmt.Sprintf("%.12s/n=%d", tc.key, n), func(t *testing.T) {
				want := int(tc.positive % uint32(n))
				if got := Murmur2Partition([]byte(tc.key), n); got != want {
					t.Fatalf("Murmur2Partition(%q, %d) = %d, want %d", tc.key, n, got, want)
				}
			})
		}
	}
}

func randomKey(r *rand.Rand, maxLen int) []byte {
	key := make([]byte, r.IntN(maxLen+1)) // never nil, may be empty
	for i := range key {
		key[i] = byte(r.UintN(256))
	}
	return key
}

// TestMurmur2Partition_MatchesFranzGo compares against franz-go's
// Java-compatible partitioner. n = MaxInt32 compares 31 bits of the hash.
func TestMurmur2Partition_MatchesFranzGo(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	kp := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	for i := range 20000 {
		key := randomKey(r, 70)
		n := 1 + r.IntN(1000)
		if i%2 == 0 {
			n = math.MaxInt32
		}
		if got, want := Murmur2Partition(key, n), kp.Partition(&kgo.Record{Key: key}, n); got != want {
			t.Fatalf("key %x n %d: got %d, franz-go %d", key, n, got, want)
		}
	}
}

func TestMurmur2Partition_JavaSignHandling(t *testing.T) {
	// "21" hashes to -973932308 in Java. toPositive clears the sign bit
	// (1173551340 % 1000 = 340); negating would give 973932308 % 1000 = 308.
	if got, want := Murmur2Partition([]byte("21"), 1000), 340; got != want {
		t.Fatalf("got %d, want %d", got, want)
	}
}

// Reference CRC-32 values: "" .. "hejsan" from librdkafka's
// 0048-partitioner.c, then the CRC-32/ISO-HDLC check value and the classic
// pangram (both also checked with Python's zlib.crc32).
var crcVectors = []struct {
	key string
	crc uint32
}{
	{"", 0x0},
	{"23456", 0xb1b451d7},
	{longKey, 0xb0150df7},
	{"hejsan", 0xd077037e},
	{"123456789", 0xcbf43926},
	{"The quick brown fox jumps over the lazy dog", 0x414fa339},
}

// librdkafka's consistent partitioner is rd_crc32(key) % partition_cnt.
func TestCRC32Partition_Librdkafka(t *testing.T) {
	for _, v := range crcVectors {
		for _, n := range []int{1, 7, 17, 1000, math.MaxInt32} {
			t.Run(fmt.Sprintf("%.12s/n=%d", v.key, n), func(t *testing.T) {
				want := int(v.crc % uint32(n))
				if got := CRC32Partition([]byte(v.key), n); got != want {
					t.Fatalf("CRC32Partition(%q, %d) = %d, want %d", v.key, n, got, want)
				}
			})
		}
	}
}

// bitwiseCRC32 is an independent reflected CRC-32 (polynomial 0xEDB88320,
// init and xorout 0xFFFFFFFF), the algorithm behind librdkafka's rd_crc32.
func bitwiseCRC32(b []byte) uint32 {
	crc := ^uint32(0)
	for _, c := range b {
		crc ^= uint32(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xedb88320
			} else {
				crc >>= 1
			}
		}
	}
	return ^crc
}

func TestCRC32Partition_MatchesBitwiseCRC(t *testing.T) {
	for _, v := range crcVectors {
		if got := bitwiseCRC32([]byte(v.key)); got != v.crc {
			t.Fatalf("reference CRC of %q = %#x, table says %#x", v.key, got, v.crc)
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		key := randomKey(r, 100)
		n := 1 + r.IntN(math.MaxInt32)
		if got, want := CRC32Partition(key, n), int(bitwiseCRC32(key)%uint32(n)); got != want {
			t.Fatalf("key %x n %d: got %d, want %d", key, n, got, want)
		}
	}
}

func TestPicker_KeyedIsDeterministic(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    Strategy
		hash func([]byte, int) int
	}{
		{"Sticky", Sticky, Murmur2Partition},
		{"CRC32", CRC32, CRC32Partition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPicker(tc.s, 100)
			for i := range 500 {
				key := []byte(strconv.Itoa(i))
				n := 1 + i%13
				a, b := p.Pick(key, 10, n), p.Pick(key, 10, n)
				if want := tc.hash(key, n); a != want || b != want {
					t.Fatalf("key %s n %d: picks %d, %d, want %d", key, n, a, b, want)
				}
			}
		})
	}
}

// An empty non-nil key is a key: it hashes (like Java's new byte[0]) instead
// of going to the sticky partition.
func TestPicker_EmptyKeyIsAKey(t *testing.T) {
	const n = 17
	for _, tc := range []struct {
		name string
		s    Strategy
		want int
	}{
		{"Sticky", Sticky, 0x106e08d9 % n},
		{"CRC32", CRC32, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPicker(tc.s, 1)
			for range 100 {
				if got := p.Pick([]byte{}, 1, n); got != tc.want {
					t.Fatalf("empty key went to %d, want %d", got, tc.want)
				}
			}
		})
	}
}

// TestSticky_StintLength checks that a keyless partition takes records until
// stickyBytes is reached and that the next record switches to another one.
func TestSticky_StintLength(t *testing.T) {
	for _, tc := range []struct {
		name        string
		stickyBytes int
		size        int
		stint       int // records per sticky partition
	}{
		{"exact fill", 1000, 100, 10},
		{"overshoot", 1000, 300, 4},
		{"record equals limit", 1000, 1000, 1},
		{"record above limit", 1000, 5000, 1},
		{"one byte", 1, 1, 1},
		{"zero stickyBytes", 0, 50, 1},
		{"negative stickyBytes", -5, 50, 1},
		{"zero size counts one byte", 100, 0, 100},
		{"negative size counts one byte", 100, -3, 100},
	} {
		for _, s := range []Strategy{Sticky, CRC32} {
			t.Run(fmt.Sprintf("%s/strategy=%d", tc.name, s), func(t *testing.T) {
				p := NewPicker(s, tc.stickyBytes)
				prev := -1
				for stint := range 50 {
					first := p.Pick(nil, tc.size, 3)
					if first == prev {
						t.Fatalf("stint %d: stayed on %d after a full stint", stint, first)
					}
					for i := 1; i < tc.stint; i++ {
						if got := p.Pick(nil, tc.size, 3); got != first {
							t.Fatalf("stint %d: record %d went to %d, want %d", stint, i, got, first)
						}
					}
					prev = first
				}
			})
		}
	}
}

func TestSticky_KeyedRecordsDoNotCountTowardSwitching(t *testing.T) {
	p := NewPicker(Sticky, 1000)
	first := p.Pick(nil, 100, 5)
	for i := range 200 {
		p.Pick([]byte(strconv.Itoa(i)), 100, 5)
	}
	for i := range 9 {
		if got := p.Pick(nil, 100, 5); got != first {
			t.Fatalf("keyless record %d went to %d, want %d", i+2, got, first)
		}
	}
	if got := p.Pick(nil, 100, 5); got == first {
		t.Fatalf("did not switch after 1000 keyless bytes")
	}
}

// TestSticky_SwitchesUniformly switches 30,000 times among 3 partitions. The
// bounds are dozens of standard deviations wide, so the test does not flake.
func TestSticky_SwitchesUniformly(t *testing.T) {
	const n, picks = 3, 30000
	p := NewPicker(Sticky, 1)
	var counts [n]int
	var moves [n][n]int
	prev := p.Pick(nil, 1, n)
	counts[prev]++
	for range picks - 1 {
		got := p.Pick(nil, 1, n)
		counts[got]++
		moves[prev][got]++
		prev = got
	}
	for i, c := range counts {
		if c < picks*20/100 || c > picks*47/100 {
			t.Errorf("partition %d got %d of %d records: %v", i, c, picks, counts)
		}
	}
	for from := range n {
		total := moves[from][0] + moves[from][1] + moves[from][2]
		for to := range n {
			m := moves[from][to]
			if from == to && m != 0 {
				t.Errorf("switched from %d to itself %d times", from, m)
			}
			if from != to && (m < total*40/100 || m > total*60/100) {
				t.Errorf("switched %d -> %d %d of %d times, want about half", from, to, m, total)
			}
		}
	}
}

func TestSticky_TwoPartitionsAlternate(t *testing.T) {
	p := NewPicker(CRC32, 1)
	prev := p.Pick(nil, 1, 2)
	for i := range 1000 {
		got := p.Pick(nil, 1, 2)
		if got == prev {
			t.Fatalf("switch %d stayed on %d", i, got)
		}
		prev = got
	}
}

func TestSticky_PartitionCountShrinks(t *testing.T) {
	const trials = 4000
	var counts [4]int
	for range trials {
		// Find a picker whose sticky partition disappears when n drops
		// from 8 to 4; each attempt succeeds with probability 1/2.
		var p Picker
		for attempt := 0; ; attempt++ {
			if attempt == 200 {
				t.Fatal("never chose a partition >= 4 out of 8")
			}
			p = NewPicker(Sticky, 1<<20)
			if p.Pick(nil, 1, 8) >= 4 {
				break
			}
		}
		got := p.Pick(nil, 1, 4)
		if got < 0 || got >= 4 {
			t.Fatalf("after shrinking to 4: picked %d", got)
		}
		for range 5 {
			if again := p.Pick(nil, 1, 4); again != got {
				t.Fatalf("re-chosen partition %d did not stick (then %d)", got, again)
			}
		}
		counts[got]++
	}
	for i, c := range counts {
		if c < trials*15/100 || c > trials*35/100 {
			t.Errorf("re-chosen partition %d in %d of %d trials: %v", i, c, trials, counts)
		}
	}
}

func TestSticky_PartitionCountGrows(t *testing.T) {
	p := NewPicker(Sticky, 1<<20)
	first := p.Pick(nil, 1, 4)
	for range 100 {
		if got := p.Pick(nil, 1, 8); got != first {
			t.Fatalf("growing moved the sticky partition from %d to %d", first, got)
		}
	}
	if got := p.Pick(nil, 1, 1); got != 0 {
		t.Fatalf("one partition: picked %d", got)
	}

	p = NewPicker(Sticky, 1)
	for range 100 {
		if got := p.Pick(nil, 1, 4); got >= 4 {
			t.Fatalf("n=4: picked %d", got)
		}
	}
	var seen [8]bool
	for range 2000 {
		seen[p.Pick(nil, 1, 8)] = true
	}
	for i, ok := range seen {
		if !ok {
			t.Errorf("partition %d never picked after growing to 8", i)
		}
	}
}

func TestRoundRobin_Cycles(t *testing.T) {
	p := NewPicker(RoundRobin, 1)
	keys := [][]byte{nil, []byte("k"), {}, []byte("k")} // keys do not matter
	for i := range 20 {
		if got := p.Pick(keys[i%len(keys)], 100, 4); got != i%4 {
			t.Fatalf("pick %d = %d, want %d", i, got, i%4)
		}
	}
	// 20 picks so far; with 6 partitions the counter continues at 20 % 6.
	for i := 20; i < 40; i++ {
		if got := p.Pick(nil, 1, 6); got != i%6 {
			t.Fatalf("pick %d with n=6 = %d, want %d", i, got, i%6)
		}
	}
}

func TestPicker_ConcurrentPicksInRange(t *testing.T) {
	ns := []int{1, 3, 5, 8}
	for _, s := range []Strategy{Sticky, CRC32, RoundRobin} {
		t.Run(fmt.Sprintf("strategy=%d", s), func(t *testing.T) {
			p := NewPicker(s, 64)
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := range 5000 {
						var key []byte
						if i%3 == 0 {
							key = []byte{byte(g), byte(i)}
						}
						n := ns[(g+i)%len(ns)]
						if got := p.Pick(key, 10, n); got < 0 || got >= n {
							t.Errorf("Pick(n=%d) = %d", n, got)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

// countConcurrently runs 8 goroutines of perG keyless picks and returns how
// many records each of n partitions received.
func countConcurrently(p Picker, n, perG int) []int {
	const goroutines = 8
	var (
		mu     sync.Mutex
		counts = make([]int, n)
		wg     sync.WaitGroup
	)
	for range goroutines {
		wg.Go(func() {
			local := make([]int, n)
			for range perG {
				local[p.Pick(nil, 1, n)]++
			}
			mu.Lock()
			defer mu.Unlock()
			for i, c := range local {
				counts[i] += c
			}
		})
	}
	wg.Wait()
	return counts
}

// Under contention every sticky stint is still exactly stickyBytes records
// of one byte, so each partition's total is a multiple of 10.
func TestSticky_ConcurrentStintsAreExact(t *testing.T) {
	counts := countConcurrently(NewPicker(Sticky, 10), 5, 10000)
	total := 0
	for i, c := range counts {
		total += c
		if c%10 != 0 {
			t.Errorf("partition %d got %d records, not whole stints of 10: %v", i, c, counts)
		}
	}
	if total != 80000 {
		t.Fatalf("counted %d records, want 80000", total)
	}
}

func TestRoundRobin_ConcurrentIsExact(t *testing.T) {
	counts := countConcurrently(NewPicker(RoundRobin, 0), 8, 1000)
	for i, c := range counts {
		if c != 1000 {
			t.Fatalf("partition %d got %d records, want 1000: %v", i, c, counts)
		}
	}
}

func TestPick_NonPositiveNPanics(t *testing.T) {
	for _, s := range []Strategy{Sticky, CRC32, RoundRobin} {
		for _, key := range [][]byte{nil, []byte("k")} {
			for _, n := range []int{0, -1} {
				t.Run(fmt.Sprintf("strategy=%d/keyed=%t/n=%d", s, key != nil, n), func(t *testing.T) {
					defer func() {
						if recover() == nil {
							t.Fatal("no panic")
						}
					}()
					NewPicker(s, 1).Pick(key, 1, n)
				})
			}
		}
	}
}

func TestNewPicker_UnknownStrategyPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	NewPicker(AdaptiveCRC32+1, 1)
}

var pickCases = []struct {
	name string
	s    Strategy
	key  []byte
}{
	{"Sticky/keyed", Sticky, []byte("some-key-0123456789")},
	{"Sticky/keyless", Sticky, nil},
	{"CRC32/keyed", CRC32, []byte("some-key-0123456789")},
	{"CRC32/keyless", CRC32, nil},
	{"RoundRobin", RoundRobin, nil},
}

func TestPick_DoesNotAllocate(t *testing.T) {
	for _, tc := range pickCases {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPicker(tc.s, 1000)
			if a := testing.AllocsPerRun(1000, func() { p.Pick(tc.key, 120, 12) }); a != 0 {
				t.Fatalf("%v allocations per Pick, want 0", a)
			}
		})
	}
}

func BenchmarkPick(b *testing.B) {
	for _, tc := range pickCases {
		b.Run(tc.name+"/goroutines=1", func(b *testing.B) {
			p := NewPicker(tc.s, 16<<10)
			b.ReportAllocs()
			for b.Loop() {
				p.Pick(tc.key, 120, 12)
			}
		})
		b.Run(tc.name+"/goroutines=GOMAXPROCS", func(b *testing.B) {
			p := NewPicker(tc.s, 16<<10)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					p.Pick(tc.key, 120, 12)
				}
			})
		})
	}
}
