package kpush

// SendAsync and its per-record state.
//
// Ownership: an asyncRecord belongs to the SendAsync call that took it
// from asyncSlabs until its partition has it (Add), then to the engine
// until its outcome is delivered (Notify, on the sink's callback goroutine
// or inline), then it is released. A record whose outcome came while a
// batch still held it (HeldByBatch) is never released: the batch may
// still read it, and the garbage collector takes its slab once nothing
// refers to it.

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/kpush/kpush/internal/buffer"
	"github.com/kpush/kpush/internal/clock"
	"github.com/kpush/kpush/internal/partitioner"
	"github.com/kpush/kpush/internal/sink"
)

// asyncRecord is a SendAsync call's record and callback.
type asyncRecord struct {
	pend   sink.Pending
	cb     func(Result, error)
	prod   *Producer
	slab   *asyncSlab           // where a is released to; nil if allocated alone
	busy   atomic.Bool          // from its slab's installLocked until release
	issued atomic.Uint32        // the slab generation that last issued it
	held   atomic.Int32         // HeldByBatch: released at 2 (Notify and ReleaseHeld)
	gen    *buffer.Gen          // the record's Flush generation
	load   *partitioner.Counter // its partition's load (partitioner.go)
	// With record hooks only: the caller's record and the SendAsync start
	// (clock.Mono), for OnRecordDone.
	rec   *Record
	start int64
	// 256 bytes, no padding needed: in a slab every record starts a cache
	// line (TestAsyncRecord_FillsCacheLines).
}

// Notify implements sink.Notifier; it runs the user's callback, then
// releases a (nothing else refers to it once its outcome is delivered).
func (a *asyncRecord) Notify(pd *sink.Pending) {
	p := a.prod
	takeLoad(&a.load, pd.Size)
	res, err := p.outcome(pd)
	if a.rec != nil {
		p.recordDone(a.rec, a.start, pd.Size, pd.Stamps, res, err)
		a.rec = nil
	}
	if a.cb != nil {
		a.cb(res, err)
	}
	a.cb = nil
	gen := a.gen
	a.gen = nil
	if !pd.HeldByBatch() || a.held.Add(1) == 2 { // else a batch still refers to it
		p.asyncs.release(a)
	}
	// After the callback: Flush waits for callbacks to finish. Buffer
	// space is accounted separately and may be released earlier (see
	// sink.callbacks.deliver).
	gen.Done()
}

// ReleaseHeld implements sink.HeldReleaser: the batch that held a, whose
// outcome came at its delivery deadline, is done with it.
func (a *asyncRecord) ReleaseHeld(*sink.Pending) {
	if a.held.Add(1) == 2 { // and Notify has run
		a.prod.asyncs.release(a)
	}
}

// asyncSlabLen is how many asyncRecords are allocated together (one bit
// each in asyncSlab.skip).
const asyncSlabLen = 64

// asyncSlabQuarterFree is the live count at which a slab whose records
// are partly busy is worth making current again (a quarter free).
const asyncSlabQuarterFree = asyncSlabLen * 3 / 4

// asyncSlabMargin is how many slabs a producer may have beyond those its
// record limit fills.
const asyncSlabMargin = 4

// asyncSlab is asyncSlabLen records in one allocation, handed out in
// address order. Records recycled one at a time (through a sync.Pool) come
// back scattered over the heap, so each of the four times the engine
// touches a record (enqueue, drain, encode, outcome), far apart in time,
// is a cache miss the CPU cannot predict; records handed out in address
// order are drained, encoded and completed in nearly that order too (a
// partition's records are consecutive in a batch), which the hardware
// prefetcher follows.
type asyncSlab struct {
	recs [asyncSlabLen]asyncRecord
	// next is the generation (high 32 bits: how many times the slab became
	// asyncSlabs.cur) and, while it is cur, the next index to hand out (low
	// 32 bits; asyncSlabLen or more once used up). One atomic add gives a
	// taker both, so it can tell (asyncRecord.issued) whether the record
	// at its index is issued in its generation or skipped (it was busy).
	next atomic.Uint64
	gen  uint32 // guarded by asyncSlabs.mu
	_    [56]byte
	// live counts busy records plus, while the slab is cur, the indices not
	// yet handed out; the slab is free again when it reaches 0 outside cur.
	// On its own cache line: the callback goroutine decrements it for each
	// record while the sender adds to next.
	live  atomic.Int32
	state slabState // guarded by asyncSlabs.mu
}

type slabState uint8

const (
	slabOut  slabState = iota // some records may be busy; not handing any out
	slabCur                   // asyncSlabs.cur
	slabFree                  // on asyncSlabs.free: no record busy
)

// asyncSlabs hands out asyncRecords: in order from the current slab,
// taking a free slab when it is used up, and, when the producer has all
// the slabs it may have and none is free (records of a stalled partition
// pin them), reusing the free records of a slab that still has busy ones.
// So memory stays bounded by the record limit whatever the order records
// complete in: a producer has at most max slabs, and at most asyncSlabLen
// × max records, more than the record limit lets be buffered.
//
// Ownership: the lock-free fast path (get) is one atomic add on the
// current slab's next index; mu guards the slab lists and each slab's
// state, taken once per slab used up and when a slab becomes free.
type asyncSlabs struct {
	cur atomic.Pointer[asyncSlab]
	// exhausted is set when no slab had a quarter of its records free (all
	// budgeted slabs pinned: a stalled partition plus SendAsync callers
	// waiting for buffer space hold them). Until a slab gets a quarter free
	// again, get allocates alone without taking mu: searching every slab
	// per call would serialize the senders.
	exhausted atomic.Bool
	owner     *Producer // set by New

	mu   sync.Mutex
	free []*asyncSlab // released slabs, most recently released last (still in cache)
	all  []*asyncSlab // every slab, for reuse of the free records of busy ones
	scan int          // where the next search of all starts
	max  int          // slabs the producer may have
}

// init sets the slab budget from the record limit.
func (s *asyncSlabs) init(p *Producer, maxRecords int64) {
	s.owner = p
	s.max = int((maxRecords+asyncSlabLen-1)/asyncSlabLen) + asyncSlabMargin
}

// get returns a record for one SendAsync call: busy, with prod and slab
// set; every other field is the caller's to set.
func (s *asyncSlabs) get(p *Producer) *asyncRecord {
	for {
		if sl := s.cur.Load(); sl != nil {
			v := sl.next.Add(1) - 1
			if i := uint32(v); i < asyncSlabLen {
				// Index i holds one count of live (installLocked), so the
				// slab cannot become free meanwhile; and a record issued
				// to this generation stays busy, so no later generation
				// issues it again.
				a := &sl.recs[i]
				if a.issued.Load() != uint32(v>>32) {
					s.unref(sl) // skipped: it was busy
					continue
				}
				a.held.Store(0)
				return a
			}
			if !s.advance(sl) {
				return &asyncRecord{prod: p} // no slab has a free record: the garbage collector takes this one
			}
			continue
		}
		if s.exhausted.Load() || !s.advance(nil) {
			return &asyncRecord{prod: p}
		}
	}
}

// advance replaces the used-up current slab sl (nil: none) with another
// and reports whether there is a current slab to take records from.
func (s *asyncSlabs) advance(sl *asyncSlab) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.cur.Load(); c != sl || (c != nil && uint32(c.next.Load()) < asyncSlabLen) {
		return true // another goroutine moved on already
	}
	if sl != nil {
		sl.state = slabOut
		if sl.live.Load() == 0 {
			sl.state = slabFree
			s.free = append(s.free, sl)
		}
	}
	next := s.takeLocked()
	s.cur.Store(next)
	if next == nil {
		s.exhausted.Store(true) // unref clears it
	}
	return next != nil
}

// takeLocked makes a slab current: the most recently freed one, a new one
// while the budget allows, else the one with the most free records.
func (s *asyncSlabs) takeLocked() *asyncSlab {
	if n := len(s.free); n > 0 {
		sl := s.free[n-1]
		s.free[n-1] = nil
		s.free = s.free[:n-1]
		s.installLocked(sl, 0)
		return sl
	}
	if len(s.all) < s.max {
		sl := new(asyncSlab)
		p := s.owner
		for i := range sl.recs {
			sl.recs[i].prod, sl.recs[i].slab = p, sl
		}
		s.all = append(s.all, sl)
		s.installLocked(sl, 0)
		return sl
	}
	// Only a slab with a quarter of its records free: installing one for
	// fewer costs more than allocating them alone.
	var best *asyncSlab
	for range len(s.all) {
		sl := s.all[s.scan]
		s.scan = (s.scan + 1) % len(s.all)
		if sl.state != slabOut {
			continue
		}
		if sl.live.Load() <= asyncSlabQuarterFree {
			best = sl // a quarter free: good enough
			break
		}
	}
	if best == nil {
		return nil
	}
	var busy uint64
	for i := range best.recs {
		if best.recs[i].busy.Load() {
			busy |= 1 << i
		}
	}
	s.installLocked(best, busy)
	return best
}

// installLocked makes sl current, skipping the busy records. Every index
// counts once in live until it is handed out (then it is the record's
// count) or skipped (then it is dropped).
func (s *asyncSlabs) installLocked(sl *asyncSlab, busy uint64) {
	// Every record to be handed out is busy from now: one taken by get
	// but not yet returned is busy already, so a search of all for free
	// records (takeLocked) never hands it out a second time.
	sl.gen++
	for i := range sl.recs {
		if busy&(1<<i) == 0 {
			sl.recs[i].busy.Store(true)
			sl.recs[i].issued.Store(sl.gen)
		}
	}
	sl.state = slabCur
	sl.live.Add(asyncSlabLen)
	sl.next.Store(uint64(sl.gen) << 32)
}

// release gives a back; nothing may refer to it any more.
func (s *asyncSlabs) release(a *asyncRecord) {
	sl := a.slab
	if sl == nil {
		return // allocated alone
	}
	a.busy.Store(false)
	s.unref(sl)
}

// unref drops one count of sl's live; the slab is free at zero unless it
// is current (advance frees it then).
func (s *asyncSlabs) unref(sl *asyncSlab) {
	n := sl.live.Add(-1)
	if n <= asyncSlabQuarterFree && s.exhausted.Load() {
		s.exhausted.Store(false) // takeLocked can use sl again
	}
	if n != 0 {
		return
	}
	s.mu.Lock()
	if sl.state == slabOut && sl.live.Load() == 0 {
		sl.state = slabFree
		s.free = append(s.free, sl)
	}
	s.mu.Unlock()
}

// SendAsync produces one record without waiting; cb (which may be nil)
// receives the outcome exactly once.
//
// ctx bounds only the wait for buffer space and first metadata; once the
// record is buffered, ctx is no longer watched. Callbacks of one partition
// run one at a time in send order, also across leader moves and retries (a
// record acknowledged while an earlier one of its partition waits for a
// retry has its callback held until that one's outcome, or its own
// delivery deadline); they run on a
// goroutine of the partition's leader's sink (the old leader's until its
// queued callbacks for the partition have run). A slow callback delays
// later callbacks that share its goroutine (and keeps their buffer space
// reserved), never the acknowledgements of other brokers or the reading of
// responses. Records that fail before being
// buffered (invalid, buffer full, closed) have cb run on the calling
// goroutine before SendAsync returns. A callback must not call Flush or
// Close.
func (p *Producer) SendAsync(ctx context.Context, r *Record, cb func(Result, error)) {
	a := p.asyncs.get(p)
	a.pend.Reset()
	a.pend.Size = 0 // set by enqueue once buffered; RecordDoneEvent.Bytes
	a.pend.Async = true
	a.cb = cb
	if p.hooks.anyRecord && r != nil {
		rc, st := hookedCopy(r) // r itself must not escape
		a.rec, a.start, a.pend.Stamps = rc, clock.Mono(), st
		for _, h := range p.hooks.send {
			h.OnRecordSend(ctx, rc)
		}
	}
	rec := r
	if a.rec != nil {
		rec = a.rec
	}
	if err := p.enqueue(ctx, rec, &a.pend, a, &a.gen, false); err != nil {
		if a.rec != nil {
			p.recordDone(a.rec, a.start, a.pend.Size, nil, Result{}, err)
			a.rec = nil
		}
		a.cb = nil
		p.asyncs.release(a)
		p.failed.Add(1)
		if cb != nil {
			cb(Result{}, err)
		}
	}
}
