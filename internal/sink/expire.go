package sink

// Delivery deadlines.
//
// Ownership: ExpireAll runs on the producer's reaper goroutine (Reap,
// reaper.go). It takes each sink's rmu (the in-flight request list,
// written by the sink loop and the reader goroutine) and, under it, the
// lock of each partition with a due batch in flight (rmu →
// PartitionQueue.mu; nothing takes rmu under a partition's mu); then each
// other partition's lock in turn (never two at once). Under a partition's
// lock it takes its recMu to end records a batch holds (expireSent copies
// them first). Async outcomes are queued for their callbacks before the
// partition lock is let go (queueAsync: a response handled meanwhile must
// queue later outcomes behind them); callbacks run, and sync outcomes are
// delivered, after unlocking (and after rmu).
//
// Every record's outcome is delivered by its deadline plus the reaper's
// slack: buffered records fail definitely (ErrDeliveryTimeout); records in
// a batch that is in flight or waiting for a retry end ErrOutcomeUnknown
// (cause ErrDeliveryTimeout) through Pending.expireSent, and the batch goes
// on as if nothing happened: its response still updates the partition's
// sequence state, and its outcome for those records is dropped (Java's
// Sender fails expired in-flight batches the same way).

import (
	"math"
	"slices"
	"sync/atomic"

	"github.com/kpush/kpush/internal/clock"
)

// due is the one rule for delivery deadlines: a record or batch whose
// deadline is d (clock.Mono nanoseconds) has expired once now >= d.
func due(d, now int64) bool { return d <= now }

// ExpireAll fails every record of the given partitions and sinks whose
// delivery deadline passed, and returns the earliest deadline still ahead
// (clock.Mono nanoseconds; 0 when none is known), so the caller can wake
// up just in time. Async callbacks run on the partition's leader's
// callback goroutine when it has a leader.
//
// One partition's outcomes due in a pass are queued in send order, whether
// they come from batches in flight, batches waiting for a retry (which
// interleave with those in flight: a rewind's failed batches were sent
// before the ones still in flight, a retry resent goes before those still
// waiting), parked outcomes or buffered records: a partition with a due
// batch in flight is expired as a whole under its sink's rmu (rmu →
// PartitionQueue.mu) in the first step, the other partitions in the
// second.
func ExpireAll(parts []*PartitionQueue, sinks []*Sink) (next int64) {
	now := clock.Mono()
	pass := expirePass.Add(1)
	earliest := func(d int64) {
		if d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	for _, s := range sinks {
		earliest(s.expireInflight(now, pass))
	}
	for _, p := range parts {
		failed, held, d, ready := p.expire(now, pass, nil, nil)
		earliest(d)
		p.afterExpire(failed, held, ready)
	}
	return next
}

// expirePass numbers ExpireAll's passes, so a partition expired in the
// first step (PartitionQueue.expiredPass) is not scanned again in the
// second.
var expirePass atomic.Uint64

// afterExpire delivers what expire left, holding no lock: sync outcomes and
// held records' space (expire queued the async outcomes).
func (p *PartitionQueue) afterExpire(failed, held []*Pending, ready *Sink) {
	if ready != nil {
		ready.nudge()
	}
	if len(held) > 0 {
		p.eng.notifyExpired(held, nil, true)
	}
	if len(failed) > 0 {
		p.eng.notifyAll(failed, nil, true)
	}
}

// expireDue is expire outside a pass, for tests.
func (p *PartitionQueue) expireDue(now int64) (failed, held []*Pending, next int64, ready *Sink) {
	return p.expire(now, expirePass.Add(1), nil, nil)
}

// outGroup is one place in a partition's send order (the key of the batch
// whose outcomes they are, or of a parked entry; buffered records come
// last) and the outcomes a reaper pass gives there.
type outGroup struct {
	ord     int64
	sub     int
	recs    []*Pending
	expired bool // ended by expireSent: queued though their batch holds them
}

// expire is one partition's part of ExpireAll, under one hold of its lock
// (in the first step also under the rmu of the sink carrying inflight, the
// partition's due batches in flight). It gathers every outcome due now —
// records of batches in flight or waiting for a retry (outcome unknown,
// expireBatch), retry batches given up (dropRetriesLocked: not written
// where that is provable; done when nothing is in flight and no rewind is
// under way — any retry batch, not only the head: a record's deadline can
// come from its Send's ctx, so a later batch may be due first), parked
// outcomes released (callbacks.go), due buffered records, wherever they are
// in the queue (senders that waited for buffer space can append a record
// behind one with a later deadline) — and queues the async ones in send
// order before unlocking (queueAsync: a response handled meanwhile must
// queue later outcomes behind them). It returns the sync outcomes (failed)
// and expired sync records (held) for afterExpire, the earliest deadline
// still ahead, and the sink to nudge when dropping retries let the
// partition send again. It also drops canceled records. The callback
// queues it makes running go on starts (the first step starts them once it
// lets rmu go), or, with starts nil, are started here after unlocking.
func (p *PartitionQueue) expire(now int64, pass uint64, inflight []*Batch, starts *cbStarts) (failed, held []*Pending, next int64, ready *Sink) {
	p.mu.Lock()
	if inflight == nil && p.expiredPass == pass {
		// Expired with its batches in flight in this pass.
		next = p.expiredNext
		p.mu.Unlock()
		return nil, nil, next, nil
	}
	var groups []outGroup
	add := func(ord int64, sub int, recs []*Pending, expired bool) {
		if len(recs) > 0 {
			groups = append(groups, outGroup{ord, sub, recs, expired})
		}
	}
	expireBatches := func(bs []*Batch) {
		for _, b := range bs {
			var recs []*Pending
			recs, next = expireBatch(b, now, nil, next, p.eng)
			add(b.ord, b.sub, recs, true)
		}
	}
	expireBatches(inflight)
	if p.inflight == 0 && p.phase != phaseRewind && len(p.retry) > 0 && p.retryDueLocked(now) {
		// Dropped in order, with the parked outcomes they release
		// (completeLocked): one group, at the first retry's place.
		ord, sub := p.retry[0].ord, p.retry[0].sub
		add(ord, sub, p.dropRetriesLocked(now, nil, nil), false)
		ready = p.queueLocked()
	}
	expireBatches(p.rewound)
	expireBatches(p.retry)
	if len(p.parked) > 0 || len(p.blocked) > 0 {
		n := p.releasableParkedLocked(now)
		for i := range p.parked[:n] {
			add(p.parked[i].ord, p.parked[i].sub, p.parked[i].recs, false)
		}
		p.parked = slices.Delete(p.parked, 0, n)
		next = p.parkedDeadlineLocked(next)
	}
	var due []*Pending
	due, next = p.expireRecsLocked(now, next)
	add(math.MaxInt64, 0, due, false)

	// Queued in send order; what is left (sync outcomes) is delivered by
	// afterExpire.
	slices.SortStableFunc(groups, func(a, b outGroup) int { return comparePlace(a.ord, a.sub, b.ord, b.sub) })
	var own cbStarts
	st := starts
	if st == nil {
		st = &own
	}
	for _, g := range groups {
		rest := p.eng.queueAsync(g.recs, 0, g.expired, st)
		if g.expired {
			held = append(held, rest...)
		} else {
			failed = append(failed, rest...)
		}
	}
	if inflight != nil {
		p.expiredPass, p.expiredNext = pass, next
	}
	var c *callbacks
	if p.leader != nil {
		c = &p.leader.cb
	}
	// Unlocking releases the space of canceled records dropped here; the
	// queues start on the leader's callback goroutine or here: the reaper
	// holds no lock.
	p.unlock()
	if starts == nil {
		p.eng.startQueues(&own, c, true)
	}
	return failed, held, next, ready
}

// expireRecsLocked fails the due buffered records and drops canceled ones;
// it returns those whose outcome the caller owns and the earliest deadline
// among the others (or next, if earlier).
func (p *PartitionQueue) expireRecsLocked(now, next int64) (failed []*Pending, _ int64) {
	keep := p.recs[:0]
	for _, r := range p.recs {
		switch {
		case r.canceled():
			p.dropRecLocked(r)
		case due(r.Deadline, now):
			if r.FailBuffered(p.expiryErrLocked()) {
				failed = append(failed, r)
			}
			p.recBytes -= int(r.Size)
		default:
			if next == 0 || r.Deadline < next {
				next = r.Deadline
			}
			keep = append(keep, r)
		}
	}
	clear(p.recs[len(keep):])
	p.recs = keep
	return failed, next
}

// retryDueLocked reports whether any retry batch is due.
func (p *PartitionQueue) retryDueLocked(now int64) bool {
	for _, b := range p.retry {
		if due(b.deadline, now) {
			return true
		}
	}
	return false
}

// expireBatch expires b's records whose deadline passed; it returns them
// appended to held, and the earliest deadline among the others.
func expireBatch(b *Batch, now int64, held []*Pending, next int64, e *Engine) ([]*Pending, int64) {
	if !due(b.deadline, now) {
		if next == 0 || b.deadline < next {
			next = b.deadline
		}
		return held, next
	}
	b.p.recMu.Lock() // expireSent copies the records it ends
	for _, r := range b.recs {
		if due(r.Deadline, now) {
			if r.expireSent(e.expiryErr()) {
				held = append(held, r)
			}
		} else if r.state.Load() == stateSending && (next == 0 || r.Deadline < next) {
			next = r.Deadline
		}
	}
	b.p.recMu.Unlock()
	return held, next
}

// track records an in-flight request's batches (request number gen), so
// ExpireAll can find their records; untrack forgets them when the request
// is back, before its batches are handled. Callers report both hand-overs
// to the reaper (scanMark, handedOver in reaper.go).
func (s *Sink) track(gen uint64, batches []*Batch) {
	s.rmu.Lock()
	if s.reqs == nil {
		s.reqs = make(map[uint64][]*Batch)
	}
	s.reqs[gen] = batches
	s.rmu.Unlock()
}

func (s *Sink) untrack(gen uint64) {
	s.rmu.Lock()
	delete(s.reqs, gen)
	s.rmu.Unlock()
}

// expireInflight is ExpireAll's first step for one sink: under rmu, it
// finds the in-flight batches whose deadline passed, visiting requests in
// the order they were sent (request numbers grow), and expires each of
// their partitions as a whole (expire), so a partition's outcomes due in
// this pass are queued in send order, across its batches in flight and
// those waiting for a retry. Queued under rmu: a later batch of these
// partitions in flight behind them is untracked (under rmu) before its
// response is handled, so its outcomes queue behind. It returns the
// earliest deadline still ahead among the batches it looked at.
func (s *Sink) expireInflight(now int64, pass uint64) (next int64) {
	earliest := func(d int64) {
		if d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	type partDue struct {
		p  *PartitionQueue
		bs []*Batch
	}
	type partLeft struct { // what expire left for afterExpire
		p            *PartitionQueue
		failed, held []*Pending
		ready        *Sink
	}
	var st cbStarts
	var parts []partDue
	var out []partLeft
	s.rmu.Lock()
	var buf [16]uint64
	gens := buf[:0]
	for gen := range s.reqs {
		gens = append(gens, gen)
	}
	slices.Sort(gens)
	for _, gen := range gens {
		for _, b := range s.reqs[gen] {
			if !due(b.deadline, now) {
				earliest(b.deadline)
				continue
			}
			i := slices.IndexFunc(parts, func(d partDue) bool { return d.p == b.p })
			if i < 0 {
				i = len(parts)
				parts = append(parts, partDue{p: b.p})
			}
			parts[i].bs = append(parts[i].bs, b)
		}
	}
	for _, d := range parts {
		failed, held, n, ready := d.p.expire(now, pass, d.bs, &st)
		earliest(n)
		out = append(out, partLeft{d.p, failed, held, ready})
	}
	s.rmu.Unlock()
	s.eng.startQueues(&st, &s.cb, true)
	for _, o := range out {
		o.p.afterExpire(o.failed, o.held, o.ready)
	}
	return next
}

// Idle reports whether the partition holds no record: nothing buffered,
// waiting for a retry or in flight. Its topic may then stop being
// refreshed (a leaderless or deleted topic needs metadata only while
// records wait for it).
func (p *PartitionQueue) Idle() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.recs) == 0 && len(p.retry) == 0 && len(p.rewound) == 0 && p.inflight == 0
}
