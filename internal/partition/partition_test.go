package partition

import (
	"hash/crc32"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Vectors from Kafka's UtilsTest.testMurmur2.
func TestMurmur2_JavaVectors(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want int32
	}{
		{[]byte("21"), -973932308},
		{[]byte("foobar"), -790332482},
		{[]byte("a-little-bit-long-string"), -985981536},
		{[]byte("a-little-bit-longer-string"), -1486304829},
		{[]byte("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58897971},
		{[]byte{'a', 'b', 'c'}, 479470107},
	} {
		t.Run(string(tc.in), func(t *testing.T) {
			if got := Murmur2(tc.in); got != tc.want {
				t.Fatalf("Murmur2(%q) = %d, want %d", tc.in, got, tc.want)
			}
		})
	}
}

// TestMurmur2Partition_MatchesFranzGo compares against franz-go's
// Java-compatible hasher for random keys and partition counts.
func TestMurmur2Partition_MatchesFranzGo(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	kp := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	for i := range 5000 {
		key := make([]byte, r.IntN(64))
		for j := range key {
			key[j] = byte(r.UintN(256))
		}
		n := 1 + r.IntN(100)
		rec := &kgo.Record{Key: key}
		if got, want := Murmur2Partition(key, n), kp.Partition(rec, n); got != want {
			t.Fatalf("case %d: key %x n %d: got %d, franz-go %d", i, key, n, got, want)
		}
	}
}

// librdkafka's consistent partitioner is rd_crc32(key) % n (IEEE CRC32).
func TestCRC32Partition_Librdkafka(t *testing.T) {
	// crc32("123456789") = 0xCBF43926, the standard check value.
	if got, want := CRC32Partition([]byte("123456789"), 1000), int(uint32(0xCBF43926)%1000); got != want {
		t.Fatalf("got %d, want %d", got, want)
	}
	for _, tc := range []struct {
		key  string
		n    int
		want int
	}{
		{"123456789", 7, int(uint32(0xCBF43926) % 7)},
		{"", 5, 0}, // crc32("") = 0
		{"a", 3, int(uint32(0xE8B7BE43) % 3)},
	} {
		if got := CRC32Partition([]byte(tc.key), tc.n); got != tc.want {
			t.Errorf("CRC32Partition(%q, %d) = %d, want %d", tc.key, tc.n, got, tc.want)
		}
		if got := int(crc32.ChecksumIEEE([]byte(tc.key)) % uint32(tc.n)); got != tc.want {
			t.Errorf("table value for %q is wrong", tc.key)
		}
	}
}

func TestSticky_KeylessSticksThenSwitches(t *testing.T) {
	p := NewPicker(Sticky, 1000)
	first := p.Pick(nil, 100, 3)
	for range 9 { // 10 × 100 bytes fill the sticky partition
		if got := p.Pick(nil, 100, 3); got != first {
			t.Fatalf("switched early: %d then %d", first, got)
		}
	}
	if next := p.Pick(nil, 100, 3); next == first {
		t.Fatalf("did not switch after 1000 bytes (still %d)", first)
	}
}

func TestSticky_UniformOverManySwitches(t *testing.T) {
	p := NewPicker(Sticky, 1)
	counts := make([]int, 3)
	const picks = 30000
	for range picks {
		counts[p.Pick(nil, 1, 3)]++
	}
	for i, c := range counts {
		if c < picks/5 || c > picks*47/100 {
			t.Fatalf("partition %d got %d of %d picks: %v", i, c, picks, counts)
		}
	}
}

func TestPicker_KeyedIsDeterministic(t *testing.T) {
	for _, s := range []Strategy{Sticky, CRC32} {
		p := NewPicker(s, 100)
		for i := range 100 {
			key := []byte(strconv.Itoa(i))
			a, b := p.Pick(key, 10, 12), p.Pick(key, 10, 12)
			want := Murmur2Partition(key, 12)
			if s == CRC32 {
				want = CRC32Partition(key, 12)
			}
			if a != b || a != want {
				t.Fatalf("strategy %d key %s: %d, %d, want %d", s, key, a, b, want)
			}
		}
	}
	// An empty key is a key, not keyless.
	if got, want := NewPicker(Sticky, 1).Pick([]byte{}, 1, 10), Murmur2Partition(nil, 10); got != want {
		t.Fatalf("empty key went to %d, want %d", got, want)
	}
}

func TestSticky_PartitionCountShrinksAndGrows(t *testing.T) {
	p := NewPicker(Sticky, 1<<20)
	for range 100 {
		if got := p.Pick(nil, 1, 8); got >= 8 {
			t.Fatalf("out of range %d", got)
		}
	}
	for range 100 {
		if got := p.Pick(nil, 1, 2); got >= 2 {
			t.Fatalf("after shrinking: %d", got)
		}
	}
	if got := p.Pick(nil, 1, 1); got != 0 {
		t.Fatalf("one partition: %d", got)
	}
}

func TestRoundRobin_Cycles(t *testing.T) {
	p := NewPicker(RoundRobin, 0)
	for i := range 10 {
		if got := p.Pick([]byte("k"), 1, 4); got != i%4 {
			t.Fatalf("pick %d = %d, want %d", i, got, i%4)
		}
	}
}

func TestPicker_Concurrent(t *testing.T) {
	for _, s := range []Strategy{Sticky, CRC32, RoundRobin} {
		p := NewPicker(s, 64)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 10000 {
					var key []byte
					if i%2 == 0 {
						key = []byte{byte(g), byte(i)}
					}
					if got := p.Pick(key, 10, 5); got < 0 || got >= 5 {
						t.Errorf("out of range %d", got)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
}

func BenchmarkPick(b *testing.B) {
	key := []byte("some-key-0123456789")
	for _, bc := range []struct {
		name string
		key  []byte
	}{{"keyed", key}, {"keyless", nil}} {
		b.Run(bc.name, func(b *testing.B) {
			p := NewPicker(Sticky, 16<<10)
			b.ReportAllocs()
			for b.Loop() {
				p.Pick(bc.key, 120, 12)
			}
		})
	}
}
