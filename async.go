package kpush

// SendAsync and its per-record state.
//
// Ownership: an asyncRecord belongs to the SendAsync call that took it
// from asyncSlabs until its partition has it (Add), then to the engine
// until its outcome is delivered (Notify, on the sink's callback goroutine
// or inline), then it is released. A record whose outcome came while a
// batch still held it (HeldByBatch) is never released: the batch may
// still read it, and the garbage collector takes its slab once nothing
// refers to it. With record hooks, its hk (kpush's copy of the record,
// in an array allocated with its slab) goes with it: written by
// SendAsync, read by the hooks until the record's OnRecordDone returns
// (in Notify, before release), then cleared.

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/kpush/kpush/internal/buffer"
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
	// With record hooks only: kpush's copy of the record, in a block its
	// slab allocates with it (hooks_engine.go); nil without record hooks.
	hk *hookedRec
	_  [8]byte
	// 256 bytes, no padding needed: in a slab every record starts a cache
	// line (TestAsyncRecord_FillsCacheLines).
}

// Notify implements sink.Notifier; it runs the user's callback, then
// releases a (nothing else refers to it once its outcome is delivered).
func (a *asyncRecord) Notify(pd *sink.Pending) {
	p := a.prod
	takeLoad(&a.load, pd.Size)
	res, err := p.outcome(pd)
	if a.hk != nil { // its record is not nil: enqueue buffered it
		p.recordDone(a.hk, pd.Size, pd.Stamps, res, err)
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

// asyncLanes is how many current slabs a producer hands records out from:
// a record takes its memory from lane partition % asyncLanes, so the
// records of one partition (up to asyncLanes partitions) are consecutive
// in memory. Keyed records spread over the partitions; from one slab, a
// partition's records would be every n-th of it, and the drain, encoding
// and outcome of a batch would each walk them with a stride the hardware
// prefetcher does not follow (pprof: the first read of a record at drain,
// encode and Notify was 30 % of the keyed async profile,
// docs/internals-async.md).
const asyncLanes = 8

// asyncSlabMargin is how many slabs a producer may have beyond those its
// record limit fills: one current slab per lane, and a few more.
const asyncSlabMargin = asyncLanes + 4

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
	// a lane's cur) and, while it is cur, the next index to hand out (low
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
	// isCur mirrors state == slabCur for unref, which runs without mu: a
	// release into some lane's current slab frees nothing another lane can
	// take, so it must not clear asyncSlabs.exhausted (each such clear
	// would cost a failed search of every slab under mu).
	isCur atomic.Bool
}

type slabState uint8

const (
	slabOut  slabState = iota // some records may be busy; not handing any out
	slabCur                   // some lane's cur (asyncLane.cur)
	slabFree                  // on asyncSlabs.free: no record busy
)

// asyncSlabs hands out asyncRecords: in order from the current slab of
// the record's lane (asyncLanes), taking a free slab when it is used up, and, when the producer has all
// the slabs it may have and none is free (records of a stalled partition
// pin them), reusing the free records of a slab that still has busy ones.
// So memory stays bounded by the record limit whatever the order records
// complete in: a producer has at most max slabs, and at most asyncSlabLen
// × max records, more than the record limit lets be buffered.
//
// Ownership: the lock-free fast path (get) is one atomic add on the
// current slab's next index; mu guards the slab lists and each slab's
// state, taken once per slab used up and when a slab becomes free. The
// lanes share the slab lists and the budget.
type asyncSlabs struct {
	lanes [asyncLanes]asyncLane
	// exhausted is set when no slab had a quarter of its records free (all
	// budgeted slabs pinned: a stalled partition's records hold them). Until a slab gets a quarter free
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

// asyncLane is one lane's current slab, on a cache line of its own (the
// senders of different partitions add to their lanes' slabs at once).
type asyncLane struct {
	cur atomic.Pointer[asyncSlab]
	_   [56]byte
}

// init sets the slab budget from the record limit.
func (s *asyncSlabs) init(p *Producer, maxRecords int64) {
	s.owner = p
	s.max = int((maxRecords+asyncSlabLen-1)/asyncSlabLen) + asyncSlabMargin
}

// newAsyncRecord allocates a record outside the slabs.
func newAsyncRecord(p *Producer) *asyncRecord {
	if p.hooks.anyRecord {
		ha := &struct {
			a  asyncRecord
			hk hookedRec
		}{}
		ha.a.prod, ha.a.hk = p, &ha.hk
		return &ha.a
	}
	return &asyncRecord{prod: p}
}

// get returns a record for one SendAsync call to partition part: busy,
// with prod and slab set; every other field is the caller's to set.
func (s *asyncSlabs) get(p *Producer, part int) *asyncRecord {
	l := &s.lanes[uint(part)%asyncLanes]
	for {
		if sl := l.cur.Load(); sl != nil {
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
			if !s.advance(l, sl) {
				return newAsyncRecord(p) // no slab has a free record: the garbage collector takes this one
			}
			continue
		}
		if s.exhausted.Load() || !s.advance(l, nil) {
			return newAsyncRecord(p)
		}
	}
}

// advance replaces lane l's used-up current slab sl (nil: none) with
// another and reports whether l has a current slab to take records from.
func (s *asyncSlabs) advance(l *asyncLane, sl *asyncSlab) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := l.cur.Load(); c != sl || (c != nil && uint32(c.next.Load()) < asyncSlabLen) {
		return true // another goroutine moved on already
	}
	if sl != nil {
		sl.state = slabOut
		// Releases that landed while sl was current did not clear
		// exhausted (unref); takeLocked below reads live after this.
		sl.isCur.Store(false)
		if sl.live.Load() == 0 {
			sl.state = slabFree
			s.free = append(s.free, sl)
		}
	}
	next := s.takeLocked()
	l.cur.Store(next)
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
		var hks *[asyncSlabLen]hookedRec
		if p.hooks.anyRecord {
			// The records' copies for the hooks, one allocation per slab
			// and only with record hooks: inside asyncRecord, they would
			// make every slab 75% larger for producers without them.
			hks = new([asyncSlabLen]hookedRec)
		}
		for i := range sl.recs {
			sl.recs[i].prod, sl.recs[i].slab = p, sl
			if hks != nil {
				sl.recs[i].hk = &hks[i]
			}
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
	sl.isCur.Store(true)
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
	if n <= asyncSlabQuarterFree && s.exhausted.Load() && !sl.isCur.Load() {
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
// retry, or failed while earlier ones are in flight, has its callback held
// until those have their outcome, or until its own delivery deadline);
// they run on a
// goroutine of the partition's leader's sink (the old leader's until its
// queued callbacks for the partition have run). A slow callback delays
// later callbacks that share its goroutine (and keeps their buffer space
// reserved), never the acknowledgements of other brokers or the reading of
// responses. Records that fail before being
// buffered (invalid, buffer full, closed) have cb run on the calling
// goroutine before SendAsync returns. A callback must not call Flush or
// Close.
func (p *Producer) SendAsync(ctx context.Context, r *Record, cb func(Result, error)) {
	// The deadline counts from here (enqueue): nothing before it can wait
	// (seen without this: senders descheduled behind a slab lock on a
	// loaded machine had outcomes 110-220ms after "call + timeout").
	mono, wall := p.clock.Now()
	if p.hooks.anyRecord && r != nil {
		p.sendAsyncHooked(ctx, r, cb, mono, wall)
		return
	}
	// Admit first, then take the record's memory from its partition's lane
	// (asyncSlabs.get); a caller waiting for buffer space holds none.
	var ad admitted
	err := p.admit(ctx, r, &ad, mono, wall, false)
	if err == nil {
		a := p.asyncs.get(p, ad.part)
		a.pend.Reset()
		a.pend.Size = 0 // set by add; RecordDoneEvent.Bytes
		a.pend.Async = true
		a.cb = cb
		if err = p.add(&ad, &a.pend, a, &a.gen); err == nil {
			return
		}
		a.cb = nil
		p.asyncs.release(a)
	}
	p.failUnbuffered(nil, 0, cb, err)
}

// failUnbuffered counts a record that failed before it was buffered, then
// runs the OnRecordDone hooks (hk not nil, size: its Bytes) and its
// callback, if any, on the calling goroutine (SendAsync, SendCancelable,
// TrySendCancelable). Counted first: the user code may panic (the panic
// goes on to the caller).
func (p *Producer) failUnbuffered(hk *hookedRec, size int32, cb func(Result, error), err error) {
	p.failed.Add(1)
	if hk != nil {
		p.recordDone(hk, size, nil, Result{}, err)
	}
	if cb != nil {
		cb(Result{}, err)
	}
}

// sendAsyncHooked is SendAsync with record hooks installed. The hooks see
// kpush's copy of the record, which lives in the slab record (hookedRec),
// and OnRecordSend runs before admit: so the slab record is taken first,
// from lane 0 (the partition is not known yet). Hooked records give up the
// per-partition memory order, and one waiting for buffer space holds its
// slab record.
func (p *Producer) sendAsyncHooked(ctx context.Context, r *Record, cb func(Result, error), mono, wall int64) {
	a := p.asyncs.get(p, 0)
	a.pend.Reset()
	a.pend.Size = 0 // set by enqueue once buffered; RecordDoneEvent.Bytes
	a.pend.Async = true
	a.cb = cb
	rc := a.hk.begin(r) // r itself must not escape
	a.pend.Stamps = &a.hk.stamps
	// Until the record is buffered, a is this goroutine's: released on
	// the way out if it is not (a failure, or user code panicking: the
	// hooks, a custom partitioner, cb), after the user code is done
	// with it.
	buffered := false
	defer func() {
		if !buffered {
			a.cb = nil
			p.asyncs.release(a)
		}
	}()
	for _, h := range p.hooks.send {
		h.OnRecordSend(ctx, rc)
	}
	err := p.enqueue(ctx, rc, &a.pend, a, &a.gen, mono, wall, false)
	if err == nil {
		buffered = true
		return
	}
	p.failUnbuffered(a.hk, a.pend.Size, cb, err)
}
