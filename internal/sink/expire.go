package sink

// Delivery deadlines.
//
// Ownership: ExpireAll runs on the producer's reaper goroutine. It takes
// each partition's lock in turn (never two at once) and each sink's rmu
// (the in-flight request list, written by the sink loop and the reader
// goroutine); it never holds a partition lock and rmu together. Under
// either it takes the batch's partition's recMu to end records a batch
// holds (expireSent copies them first). Outcomes are delivered after
// unlocking.
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

// ExpireAll fails every record of the given partitions and sinks whose
// delivery deadline passed, and returns the earliest deadline still ahead
// (clock.Mono nanoseconds; 0 when none is known), so the caller can wake
// up just in time. Async callbacks run on the partition's leader's
// callback goroutine when it has a leader.
func ExpireAll(parts []*PartitionQueue, sinks []*Sink) (next int64) {
	now := clock.Mono()
	earliest := func(d int64) {
		if d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	for _, p := range parts {
		var cb *callbacks
		if out, leader := p.expireBuffered(now); len(out) > 0 {
			if leader != nil {
				cb = &leader.cb
			}
			p.eng.notifyAll(out, cb)
		}
		failed, held, d, leader := p.expireDue(now)
		earliest(d)
		cb = nil
		if leader != nil {
			cb = &leader.cb
		}
		if len(failed) > 0 {
			p.eng.notifyAll(failed, cb)
		}
		if len(held) > 0 {
			p.eng.notifyExpired(held, cb)
		}
	}
	for _, s := range sinks {
		held, d := s.expireInflight(now)
		earliest(d)
		if len(held) > 0 {
			s.eng.notifyExpired(held, &s.cb)
		}
	}
	return next
}

// expireDue fails buffered records whose deadline passed (wherever they are
// in the queue: senders that waited for buffer space can append a record
// behind one with a later deadline), expires the records of retry batches
// whose deadline passed while the batches cannot be dropped yet (others are
// in flight), and returns the earliest deadline still ahead.
func (p *PartitionQueue) expireDue(now int64) (failed, held []*Pending, next int64, leader *Sink) {
	p.mu.Lock()
	defer p.unlock() // releases the space of canceled records dropped here
	earliest := func(d int64) {
		if next == 0 || d < next {
			next = d
		}
	}
	keep := p.recs[:0]
	for _, r := range p.recs {
		if r.canceled() { // canceled since expireBuffered: drop with its accounting
			p.dropRecLocked(r)
			continue
		}
		if r.Deadline <= now {
			if r.FailBuffered(p.eng.expiryErr()) {
				failed = append(failed, r)
			}
			p.recBytes -= int(r.Size)
			continue
		}
		earliest(r.Deadline)
		keep = append(keep, r)
	}
	clear(p.recs[len(keep):])
	p.recs = keep
	for _, bs := range [][]*Batch{p.retry, p.rewound} {
		for _, b := range bs {
			held, next = expireBatch(b, now, held, next, p.eng)
		}
	}
	return failed, held, next, p.leader
}

// expireBatch expires b's records whose deadline passed; it returns them
// appended to held, and the earliest deadline among the others.
func expireBatch(b *Batch, now int64, held []*Pending, next int64, e *Engine) ([]*Pending, int64) {
	if b.deadline > now {
		if next == 0 || b.deadline < next {
			next = b.deadline
		}
		return held, next
	}
	b.p.recMu.Lock() // expireSent copies the records it ends
	for _, r := range b.recs {
		if r.Deadline <= now {
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
// is back, before its batches are handled.
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
	s.rmu.Lock()
	defer s.rmu.Unlock()
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
