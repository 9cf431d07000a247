package sink

// Delivery deadlines.
//
// Ownership: ExpireAll runs on the producer's reaper goroutine (Reap,
// reaper.go). It takes
// each partition's lock in turn (never two at once) and each sink's rmu
// (the in-flight request list, written by the sink loop and the reader
// goroutine); it never holds a partition lock and rmu together. Under
// either it takes the batch's partition's recMu to end records a batch
// holds (expireSent copies them first). Async outcomes are queued for
// their callbacks before the partition lock or rmu is let go (queueAsync:
// a response handled meanwhile must queue later outcomes behind them);
// callbacks run, and sync outcomes are delivered, after unlocking.
//
// Every record's outcome is delivered by its deadline plus the reaper's
// slack: buffered records fail definitely (ErrDeliveryTimeout); records in
// a batch that is in flight or waiting for a retry end ErrOutcomeUnknown
// (cause ErrDeliveryTimeout) through Pending.expireSent, and the batch goes
// on as if nothing happened: its response still updates the partition's
// sequence state, and its outcome for those records is dropped (Java's
// Sender fails expired in-flight batches the same way).

import (
	"slices"

	"github.com/kpush/kpush/internal/clock"
)

// due is the one rule for delivery deadlines: a record or batch whose
// deadline is d (clock.Mono nanoseconds) has expired once now >= d.
func due(d, now int64) bool { return d <= now }

// ExpireAll fails every record of the given partitions and sinks whose
// delivery deadline passed, and returns the earliest deadline still ahead
// (clock.Mono nanoseconds; 0 when none is known), so the caller can wake
// up just in time. Async callbacks run on the partition's leader's
// callback goroutine when it has a leader. In-flight requests go first:
// their records were sent before a partition's retries and buffered
// records, so one partition's expired records keep their callback order.
func ExpireAll(parts []*PartitionQueue, sinks []*Sink) (next int64) {
	now := clock.Mono()
	earliest := func(d int64) {
		if d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	for _, s := range sinks {
		held, d := s.expireInflight(now)
		earliest(d)
		if len(held) > 0 {
			s.eng.notifyExpired(held, &s.cb, true)
		}
	}
	for _, p := range parts {
		failed, held, d, ready := p.expireDue(now)
		earliest(d)
		if ready != nil {
			ready.nudge()
		}
		// Sync outcomes and held records' space only: expireDue queued
		// the async outcomes (on the leader's callback goroutine).
		if len(held) > 0 {
			p.eng.notifyExpired(held, nil, true)
		}
		if len(failed) > 0 {
			p.eng.notifyAll(failed, nil, true)
		}
	}
	return next
}

// expireDue is one partition's part of ExpireAll, under one hold of its
// lock. It drops canceled records and fails due buffered records, wherever
// they are in the queue (senders that waited for buffer space can append a
// record behind one with a later deadline). Due retry batches are given up
// (dropRetriesLocked: not written where that is provable) when nothing is
// in flight and no rewind is under way — any retry batch, not only the
// head: a record's deadline can come from its Send's ctx, so a later batch
// may be due first; otherwise their due records end outcome unknown
// (expireBatch) and the batches stay until they can be dropped. failed
// lists retries before buffered records (send order); held records come
// from batches sent before both. It also returns the earliest deadline
// still ahead and the sink to nudge when dropping retries let the
// partition send again. Async outcomes are queued here (queueAsync), so
// failed and held keep only what notifyAll and notifyExpired deliver.
func (p *PartitionQueue) expireDue(now int64) (failed, held []*Pending, next int64, ready *Sink) {
	p.mu.Lock()
	defer func() {
		// Async outcomes into the callback queue before p is unlocked
		// (queueAsync), held ones first (sent before the others); then
		// unlock, which releases the space of canceled records dropped
		// here, and start the queue on the leader's callback goroutine or
		// here (the reaper holds no other lock).
		var st cbStarts
		held = p.eng.queueAsync(held, 0, true, &st)
		failed = p.eng.queueAsync(failed, 0, false, &st)
		var c *callbacks
		if p.leader != nil {
			c = &p.leader.cb
		}
		p.unlock()
		p.eng.startQueues(&st, c, true)
	}()
	if p.inflight == 0 && p.phase != phaseRewind && p.retryDueLocked(now) {
		failed = p.dropRetriesLocked(now, nil, failed)
		ready = p.queueLocked()
	}
	for _, bs := range [][]*Batch{p.retry, p.rewound} {
		for _, b := range bs {
			held, next = expireBatch(b, now, held, next, p.eng)
		}
	}
	// After held (expired in batches) and dropped retries: the outcomes
	// parked behind them come next (callbacks.go).
	failed = p.releaseParkedLocked(now, failed)
	next = p.parkedDeadlineLocked(next)
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
	return failed, held, next, ready
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

// expireInflight expires the records of in-flight requests whose deadline
// passed and returns the earliest deadline still ahead. Requests are
// visited in the order they were sent (request numbers grow), so one
// partition's expired records reach its callback queue in send order.
func (s *Sink) expireInflight(now int64) (held []*Pending, next int64) {
	var st cbStarts
	s.rmu.Lock()
	defer func() {
		// Async outcomes into their callback queues under rmu: a later
		// batch of their partitions is in flight behind these, here, and
		// its response is untracked (under rmu) before it is handled, so
		// its outcomes queue behind. Started on the reaper, holding no lock.
		held = s.eng.queueAsync(held, 0, true, &st)
		s.rmu.Unlock()
		s.eng.startQueues(&st, &s.cb, true)
	}()
	var buf [16]uint64
	gens := buf[:0]
	for gen := range s.reqs {
		gens = append(gens, gen)
	}
	slices.Sort(gens)
	for _, gen := range gens {
		for _, b := range s.reqs[gen] {
			held, next = expireBatch(b, now, held, next, s.eng)
		}
	}
	return held, next
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
