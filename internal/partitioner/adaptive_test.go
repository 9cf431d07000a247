package partitioner

import "testing"

// adaptivePicks sends records of limit bytes (one switch each) through an
// Adaptive picker over n partitions whose counters hold loads (bytes), with
// availability ok, and returns how many went to each partition.
func adaptivePicks(t *testing.T, s Strategy, n, records int, loads []int64, ok []bool) []int {
	t.Helper()
	const limit = 100
	p := NewPicker(s, limit)
	if ok == nil {
		ok = make([]bool, n)
		for i := range ok {
			ok[i] = true
		}
	}
	p.SetAvailable(ok)
	for i, l := range loads {
		if c := p.Counter(i); c != nil {
			c.Add(l)
		}
	}
	got := make([]int, n)
	for range records {
		got[p.Pick(nil, limit, n)]++
	}
	return got
}

func TestAdaptive_PrefersLessLoadedPartitions(t *testing.T) {
	// Partition 0 is 10 batches behind: weight 1 against 11 for each other
	// partition, so about 1/34 of the switches go there (uniform: 1/4).
	const records = 4000
	for _, tc := range []struct {
		s       Strategy
		maxFrac float64
		minFrac float64
	}{
		{Adaptive, 0.08, 0},
		{AdaptiveCRC32, 0.08, 0},
		{Sticky, 1, 0.15}, // the uniform choice ignores load
	} {
		got := adaptivePicks(t, tc.s, 4, records, []int64{1000, 0, 0, 0}, nil)
		frac := float64(got[0]) / records
		if frac > tc.maxFrac || frac < tc.minFrac {
			t.Errorf("strategy %d: %.3f of records on the loaded partition (per partition %v), want in [%.2f, %.2f]", tc.s, frac, got, tc.minFrac, tc.maxFrac)
		}
	}
}

func TestAdaptive_EqualLoadsPickUniformly(t *testing.T) {
	// Loads within one batch of each other weigh the same (Java compares
	// whole queued batches).
	const records = 4000
	got := adaptivePicks(t, Adaptive, 4, records, []int64{520, 590, 500, 555}, nil)
	for i, g := range got {
		if f := float64(g) / records; f < 0.15 || f > 0.35 {
			t.Errorf("partition %d got %.3f of the records (%v), want about 1/4", i, f, got)
		}
	}
}

func TestAdaptive_SkipsPartitionsWithoutLeader(t *testing.T) {
	// Partition 1 has no leader and the least load: never picked.
	got := adaptivePicks(t, Adaptive, 4, 2000, []int64{900, 0, 600, 300}, []bool{true, false, true, true})
	if got[1] != 0 {
		t.Errorf("partition without a leader got %d records (%v)", got[1], got)
	}
	if got[3] <= got[0] {
		t.Errorf("less loaded partition 3 got %d records, loaded partition 0 %d (%v)", got[3], got[0], got)
	}
}

func TestAdaptive_Counters(t *testing.T) {
	p := NewPicker(Adaptive, 100)
	if p.Counter(0) != nil {
		t.Fatal("counter before SetAvailable")
	}
	p.SetAvailable([]bool{true, true})
	c := p.Counter(1)
	if c == nil || p.Counter(2) != nil || p.Counter(-1) != nil {
		t.Fatalf("counters: 1=%p 2=%p -1=%p", c, p.Counter(2), p.Counter(-1))
	}
	c.Add(7)
	p.SetAvailable([]bool{true, true, true}) // the topic grew
	if p.Counter(1) != c || c.Load() != 7 || p.Counter(2) == nil {
		t.Fatal("growing the table replaced or reset a counter")
	}
	for _, s := range []Strategy{Sticky, CRC32, RoundRobin} {
		q := NewPicker(s, 100)
		q.SetAvailable([]bool{true})
		if q.Counter(0) != nil {
			t.Errorf("strategy %d has load counters", s)
		}
	}
}

func TestAdaptive_PickDoesNotAllocate(t *testing.T) {
	p := NewPicker(Adaptive, 100)
	ok := make([]bool, 12)
	for i := range ok {
		ok[i] = true
	}
	p.SetAvailable(ok)
	for i := range 12 {
		p.Counter(i).Add(int64(i * 100))
	}
	if a := testing.AllocsPerRun(1000, func() { p.Pick(nil, 100, 12) }); a != 0 {
		t.Fatalf("%v allocations per adaptive Pick, want 0", a)
	}
}
