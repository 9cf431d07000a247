package kpush

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/kpush/kpush/kafkatest"
)

// TestAsyncRecord_FillsCacheLines: slab records are a whole number of
// cache lines, so that each one's first line holds what a batch's drain
// reads (sink.Pending's field order).
func TestAsyncRecord_FillsCacheLines(t *testing.T) {
	if n := unsafe.Sizeof(asyncRecord{}); n%64 != 0 {
		t.Fatalf("asyncRecord is %d bytes, not a multiple of 64: adjust its padding", n)
	}
	if off := unsafe.Offsetof(asyncRecord{}.pend); off != 0 {
		t.Fatalf("pend at offset %d, want 0", off)
	}
}

func newTestSlabs(maxRecords int64) *asyncSlabs {
	s := &asyncSlabs{}
	s.init(&Producer{}, maxRecords)
	return s
}

// TestAsyncSlabs_StallPinsNoMoreMemory: when one record in every slab
// stays busy (a stalled partition's, say) while the others complete, the
// producer keeps at most its slab budget and reuses the free records of
// the pinned slabs instead of allocating, so memory stays bounded by the
// record limit.
func TestAsyncSlabs_StallPinsNoMoreMemory(t *testing.T) {
	const maxRecords = 1024
	s := newTestSlabs(maxRecords)
	var stuck []*asyncRecord
	alone := 0
	for i := range 200 * asyncSlabLen {
		a := s.get(s.owner, i/3%11) // runs of a partition, over every lane
		if a.slab == nil {
			alone++
		}
		if i%asyncSlabLen == 0 && len(stuck) < maxRecords {
			stuck = append(stuck, a) // never released
			continue
		}
		s.release(a)
	}
	if len(s.all) > s.max {
		t.Fatalf("%d slabs, budget %d", len(s.all), s.max)
	}
	if alone > 0 {
		t.Fatalf("%d records allocated alone although pinned slabs had free records", alone)
	}
	seen := map[*asyncRecord]bool{}
	for _, a := range stuck {
		if seen[a] || !a.busy.Load() {
			t.Fatalf("a busy record was handed out again")
		}
		seen[a] = true
	}
}

// TestAsyncSlabs_HeldRecordWaitsForBoth: a record whose outcome came at
// its deadline while a batch held it is reused only after both its Notify
// and the batch's ReleaseHeld, in either order.
func TestAsyncSlabs_HeldRecordWaitsForBoth(t *testing.T) {
	for _, notifyFirst := range []bool{true, false} {
		p := &Producer{} // ReleaseHeld releases through a.prod
		s := &p.asyncs
		s.init(p, asyncSlabLen)
		var recs []*asyncRecord
		for range asyncSlabLen {
			recs = append(recs, s.get(s.owner, 0))
		}
		held := recs[3]
		for _, a := range recs {
			if a != held {
				s.release(a)
			}
		}
		notify := func() { // Notify's tail for a HeldByBatch record
			if held.held.Add(1) == 2 {
				s.release(held)
			}
		}
		if notifyFirst {
			notify()
		} else {
			held.ReleaseHeld(nil)
		}
		if !held.busy.Load() || len(s.free) != 0 {
			t.Fatalf("notifyFirst=%v: released after one of the two", notifyFirst)
		}
		if notifyFirst {
			held.ReleaseHeld(nil)
		} else {
			notify()
		}
		if held.busy.Load() {
			t.Fatalf("notifyFirst=%v: not released after both", notifyFirst)
		}
	}
}

// TestAsyncSlabs_NoRecordTwice: under concurrent get and release (run
// with -race), a record is never handed out while it is busy.
func TestAsyncSlabs_NoRecordTwice(t *testing.T) {
	s := newTestSlabs(256)
	var owners sync.Map // *asyncRecord → goroutine id
	var bad atomic.Int32
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var keep []*asyncRecord
			for i := range 20000 {
				a := s.get(s.owner, i%3+g) // lanes shared by goroutines, and not
				if _, dup := owners.LoadOrStore(a, g); dup {
					bad.Add(1)
				}
				keep = append(keep, a)
				if len(keep) > 50 || i%7 == 0 {
					// release out of order: oldest, or a random-ish one
					j := i % len(keep)
					r := keep[j]
					keep = append(keep[:j], keep[j+1:]...)
					owners.Delete(r)
					s.release(r)
				}
			}
			for _, r := range keep {
				owners.Delete(r)
				s.release(r)
			}
		}()
	}
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d records handed out while busy", n)
	}
	if len(s.all) > s.max {
		t.Fatalf("%d slabs, budget %d", len(s.all), s.max)
	}
}

// busyRecords counts the slab records handed out and not yet released
// (the current slab's records not handed out yet are busy too).
func busyRecords(p *Producer) int {
	p.asyncs.mu.Lock()
	defer p.asyncs.mu.Unlock()
	n := 0
	for _, sl := range p.asyncs.all {
		for i := range sl.recs {
			if sl.recs[i].busy.Load() {
				n++
			}
		}
	}
	for l := range p.asyncs.lanes {
		if sl := p.asyncs.lanes[l].cur.Load(); sl != nil {
			for i := uint32(sl.next.Load()); i < asyncSlabLen; i++ {
				if sl.recs[i].issued.Load() == sl.gen {
					n--
				}
			}
		}
	}
	return n
}

// heldProducer returns a producer (opts added) on a new one-partition
// topic of a fresh cluster, one record already sent (connection and
// producer ID in place), whose produce requests the broker then holds
// until open is called (also at the test's end, before the producer's
// Close); arrived gets a value when a held request reaches the broker.
func heldProducer(t *testing.T, topic string, opts ...Option) (p *Producer, arrived chan struct{}, open func()) {
	t.Helper()
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic(topic, 1))
	setHold, arrived := holdProduces(c)
	p, err := New(append([]Option{WithBrokers(c.Addrs()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	if _, err := p.Send(context.Background(), &Record{Topic: topic, Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	var release sync.Once
	open = func() { setHold(nil); release.Do(func() { close(hold) }) }
	t.Cleanup(open) // runs before the Close registered above
	setHold(hold)
	return p, arrived, open
}

// TestSendAsync_ExpiredInFlightRecordsReusedAfterTheirBatch: SendAsync
// records whose delivery deadline passes while their request hangs get
// their callbacks at the deadline, but their records are reused only once
// the batch is done with them (the batch may still be split and encoded
// again from them); then they are reused, not leaked.
func TestSendAsync_ExpiredInFlightRecordsReusedAfterTheirBatch(t *testing.T) {
	p, arrived, open := heldProducer(t, "held", WithRequestTimeout(300*time.Millisecond),
		WithDeliveryTimeout(400*time.Millisecond), WithMaxBufferedRecords(256))
	ctx := context.Background()
	// Which records make it into requests before the deadline depends on
	// scheduling: the sink sends what is buffered when it runs, up to the
	// requests in flight allowed, and records it never got to send fail
	// not written at their deadline. Under load (2 cores, -race) a few
	// records per request is common. Those in flight (unknown) must stay
	// busy; those never sent hold no batch and are released.
	const n = 100
	var wg sync.WaitGroup
	var inFlight, buffered atomic.Int64
	wg.Add(n)
	for range n {
		p.SendAsync(ctx, &Record{Topic: "held", Value: make([]byte, 100)}, func(_ Result, err error) {
			switch {
			case errors.Is(err, ErrOutcomeUnknown) && errors.Is(err, ErrDeliveryTimeout):
				inFlight.Add(1)
			case errors.Is(err, ErrNotWritten) && errors.Is(err, ErrDeliveryTimeout):
				buffered.Add(1)
			default:
				t.Errorf("got %v, want ErrDeliveryTimeout at the delivery deadline", err)
			}
			wg.Done()
		})
	}
	<-arrived
	wg.Wait()
	// Notify runs the callback, then releases the slab record (unless a
	// batch holds it), then counts the record Done: the callbacks having
	// returned says nothing about the releases. Flush returns after every
	// record's Done, so after every release the deadline brought.
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("at the deadline: %d records in flight in %d requests, %d still buffered", inFlight.Load(), p.Stats().InflightRequests, buffered.Load())
	if inFlight.Load() == 0 {
		t.Fatalf("no record in flight at its deadline (%d buffered): the test did not exercise in-flight expiry", buffered.Load())
	}
	if got, want := busyRecords(p), int(inFlight.Load()); got != want {
		t.Fatalf("%d records busy after the deadline with their batch in flight, want the %d in flight (%d were still buffered)", got, want, buffered.Load())
	}
	open()
	deadline := time.Now().Add(10 * time.Second)
	for busyRecords(p) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d records still busy after their batch was answered", busyRecords(p))
		}
		time.Sleep(10 * time.Millisecond)
	}
	slabs := len(p.asyncs.all)
	wg.Add(10 * n)
	for range 10 * n {
		p.SendAsync(ctx, &Record{Topic: "held", Value: make([]byte, 100)}, func(_ Result, err error) {
			if err != nil {
				t.Error(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if got := len(p.asyncs.all); got > p.asyncs.max || got < slabs {
		t.Fatalf("%d slabs (before: %d, budget %d)", got, slabs, p.asyncs.max)
	}
}

// TestAsyncSlabs_ExhaustedAllocatesWithoutSearching: with every budgeted
// slab busy (a full buffer and more SendAsync callers waiting for space
// than the margin), get allocates alone without taking mu or searching
// the slabs each time, and goes back to slab records once a slab has a
// quarter of its records free again.
func TestAsyncSlabs_ExhaustedAllocatesWithoutSearching(t *testing.T) {
	s := newTestSlabs(1 << 12)
	var held []*asyncRecord
	for range s.max * asyncSlabLen {
		held = append(held, s.get(s.owner, 0))
	}
	if a := s.get(s.owner, 0); a.slab != nil {
		t.Fatal("a slab record although every slab record is busy")
	}
	if !s.exhausted.Load() {
		t.Fatal("not marked exhausted after a search found no slab")
	}
	s.mu.Lock() // a get that took mu (to search) would block here
	done := make(chan *asyncRecord)
	go func() { done <- s.get(s.owner, 0) }()
	select {
	case a := <-done:
		if a.slab != nil {
			t.Fatal("a slab record while exhausted")
		}
	case <-time.After(5 * time.Second):
		s.mu.Unlock()
		<-done
		t.Fatal("get took asyncSlabs.mu while exhausted: every call searches the slabs")
	}
	s.mu.Unlock()
	// Fewer than a quarter of one slab's records free: still exhausted.
	for _, a := range held[:asyncSlabLen/4-1] {
		s.release(a)
	}
	if a := s.get(s.owner, 0); a.slab != nil || !s.exhausted.Load() {
		t.Fatalf("slab %v, exhausted %v with %d records of a slab free, want alone and exhausted", a.slab != nil, s.exhausted.Load(), asyncSlabLen/4-1)
	}
	s.release(held[asyncSlabLen/4-1])
	if a := s.get(s.owner, 0); a.slab == nil {
		t.Fatal("allocated alone although a slab has a quarter of its records free")
	}
}

// TestAsyncSlabs_OtherLanesCurrentSlabKeepsExhausted: releases into a
// slab that is another lane's current slab free nothing lane 0 can take,
// so they must leave exhausted set; clearing it would make each following
// get search every slab under mu and fail.
func TestAsyncSlabs_OtherLanesCurrentSlabKeepsExhausted(t *testing.T) {
	s := newTestSlabs(1 << 12)
	var lane1 []*asyncRecord
	for range 20 {
		lane1 = append(lane1, s.get(s.owner, 1))
	}
	for {
		if a := s.get(s.owner, 0); a.slab == nil {
			break // allocated alone: no slab left
		}
	}
	if !s.exhausted.Load() {
		t.Fatal("not exhausted after a get allocated alone")
	}
	for i, a := range lane1 {
		s.release(a)
		s.mu.Lock() // a get that searches blocks here
		done := make(chan struct{})
		go func() { s.get(s.owner, 0); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			s.mu.Unlock()
			<-done
			t.Fatalf("after release %d into lane 1's current slab, get searched the slabs under mu", i)
		}
		s.mu.Unlock()
	}
}

// TestAsyncSlabs_PartitionRecordsConsecutive: records of interleaved
// partitions (keyed records) are each handed out in address order within
// their partition, so a batch's drain, encoding and outcomes walk
// consecutive memory; partitions that share a lane (asyncLanes apart)
// interleave.
func TestAsyncSlabs_PartitionRecordsConsecutive(t *testing.T) {
	s := newTestSlabs(1 << 12)
	last := map[int]*asyncRecord{}
	for i := range asyncSlabLen / 2 {
		for _, part := range []int{0, 1, 2, 5} {
			a := s.get(s.owner, part)
			if a.slab == nil {
				t.Fatal("a record allocated alone")
			}
			if prev := last[part]; prev != nil && prev.slab == a.slab && uintptr(unsafe.Pointer(a)) != uintptr(unsafe.Pointer(prev))+unsafe.Sizeof(*a) {
				t.Fatalf("record %d of partition %d is not next to the partition's previous one", i, part)
			} else if prev != nil && prev.slab != a.slab {
				t.Fatalf("record %d of partition %d starts a new slab before the partition used one up", i, part)
			}
			last[part] = a
		}
	}
	a, b := s.get(s.owner, 3), s.get(s.owner, 3+asyncLanes)
	if uintptr(unsafe.Pointer(b)) != uintptr(unsafe.Pointer(a))+unsafe.Sizeof(*a) {
		t.Fatal("partitions of one lane do not share its slab")
	}
}

// TestSendAsync_WaitingForSpaceHoldsNoRecord: a SendAsync call blocked
// on a full buffer holds no slab record (admit reserves the space before
// asyncSlabs.get), so callers waiting for space cannot pin the slabs; once
// space frees up, every one of them is sent.
func TestSendAsync_WaitingForSpaceHoldsNoRecord(t *testing.T) {
	const limit, waiting = 8, 6
	p, arrived, open := heldProducer(t, "full", WithMaxBufferedRecords(limit))
	ctx := context.Background()
	var wg sync.WaitGroup
	cb := func(_ Result, err error) {
		if err != nil {
			t.Error(err)
		}
		wg.Done()
	}
	wg.Add(limit + waiting)
	for range limit {
		p.SendAsync(ctx, &Record{Topic: "full", Value: []byte("v")}, cb)
	}
	<-arrived
	for range waiting {
		go p.SendAsync(ctx, &Record{Topic: "full", Value: []byte("w")}, cb)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.lim.Waiting() < waiting {
		if time.Now().After(deadline) {
			t.Fatalf("%d SendAsync calls waiting for space, want %d", p.lim.Waiting(), waiting)
		}
		time.Sleep(time.Millisecond)
	}
	if got := busyRecords(p); got != limit {
		t.Fatalf("%d slab records busy with %d buffered and %d callers waiting for space, want %d", got, limit, waiting, limit)
	}
	open()
	wg.Wait()
}
