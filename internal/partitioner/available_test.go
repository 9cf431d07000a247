package partitioner

import "testing"

// TestPick_SkipsPartitionsWithoutLeader: keyless sticky and round-robin
// picks never choose a partition that has no leader while another one has
// (Java's BuiltInPartitioner, KIP-794), including a sticky partition that
// loses its leader mid-batch; keyed picks keep their partition; with no
// leader anywhere every pick still returns a partition in range.
func TestPick_SkipsPartitionsWithoutLeader(t *testing.T) {
	const n = 4
	for _, tc := range []struct {
		name string
		s    Strategy
	}{{"sticky", Sticky}, {"crc32 keyless", CRC32}, {"round robin", RoundRobin}} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPicker(tc.s, 100)
			// Make some partition the sticky one, then take its leader away.
			first := p.Pick(nil, 10, n)
			ok := []bool{true, true, true, true}
			ok[first] = false
			ok[(first+2)%n] = false
			p.SetAvailable(ok)
			seen := map[int]int{}
			for range 1000 {
				part := p.Pick(nil, 30, n)
				if part < 0 || part >= n {
					t.Fatalf("Pick = %d, out of [0, %d)", part, n)
				}
				seen[part]++
			}
			for part, c := range seen {
				if !ok[part] {
					t.Errorf("%d of 1000 keyless records went to partition %d, which has no leader", c, part)
				}
			}
			if len(seen) != 2 {
				t.Errorf("records went to partitions %v, want both partitions with a leader", seen)
			}

			// Leaders back: every partition is used again.
			p.SetAvailable(nil)
			seen = map[int]int{}
			for range 2000 {
				seen[p.Pick(nil, 30, n)]++
			}
			if len(seen) != n {
				t.Errorf("after leaders came back, records went to %v, want all %d partitions", seen, n)
			}

			// No leader anywhere: still a partition in range (the records
			// wait there for a leader).
			p.SetAvailable(make([]bool, n))
			for range 100 {
				if part := p.Pick(nil, 30, n); part < 0 || part >= n {
					t.Fatalf("Pick = %d with no leader anywhere, out of range", part)
				}
			}
			// Partitions beyond the availability set (the topic grew) count
			// as available.
			p.SetAvailable([]bool{false, false})
			for range 100 {
				if part := p.Pick(nil, 30, n); part < 2 {
					t.Fatalf("Pick = %d, a partition without a leader, while 2 and 3 may have one", part)
				}
			}
		})
	}
	t.Run("keyed", func(t *testing.T) {
		p := NewPicker(Sticky, 100)
		key := []byte("k")
		want := Murmur2Partition(key, n)
		ok := []bool{true, true, true, true}
		ok[want] = false
		p.SetAvailable(ok)
		if got := p.Pick(key, 10, n); got != want {
			t.Errorf("keyed Pick = %d with its partition leaderless, want %d (a key's partition never moves)", got, want)
		}
	})
}
