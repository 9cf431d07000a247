package sink

// The partition's sending state machine and its failure paths.
//
// Ownership: everything here runs with Partition.mu held (functions end in
// Locked) except the entry points failBuffered and failUnsent, which take
// it; expire.go holds the reaper's side. See queue.go for the lock order.

import (
	"slices"
	"time"

	"github.com/kpush/kpush/internal/batch"
	"github.com/kpush/kpush/internal/clock"
	"github.com/kpush/kpush/internal/idem"
)

// phase is a partition's sending state; stepLocked is the only place that
// changes it.
type phase uint8

const (
	// phaseProbe: sending, one batch in flight at a time. Nothing has been
	// acknowledged under the current producer ID since the partition moved
	// to it, or the broker showed it lost the producer's state; a broker
	// without state takes any sequence as a first batch (KIP-360), so a
	// second batch in flight could be written ahead of a failed first.
	phaseProbe phase = iota
	// phaseSteady: sending, up to maxPartitionInflight batches in flight
	// (one without idempotence).
	phaseSteady
	// phaseRewind: a batch failed; nothing is sent until every in-flight
	// batch is back, then settleLocked requeues the failed batches in
	// order, drops expired ones and renumbers.
	phaseRewind
	// phaseBackoff: the rewind saw a retriable failure; a timer ends it.
	phaseBackoff
	// phaseEpoch: the partition's sequences under its producer ID broke
	// (it asked for a new epoch, bumpFrom) and nothing is in flight; it
	// sends nothing, neither retries nor new records, until the producer
	// ID moves on, then renumbers from sequence 0 (switchIDLocked, in
	// drain). Under the old ID the broker refuses the resend again, or,
	// holding no state for it, takes it as a first batch that the bump's
	// renumbering then does not know about. The reaper still expires what
	// waits here, so a slow or failing InitProducerID holds no record
	// past its deadline.
	phaseEpoch
	// phaseClosed: Close failed what was buffered; Add refuses records.
	// Terminal.
	phaseClosed
)

var phaseNames = [...]string{"probe", "steady", "rewind", "backoff", "epoch", "closed"}

func (ph phase) String() string { return phaseNames[ph] }

// sending reports whether a partition in this phase may drain batches.
func (ph phase) sending() bool { return ph == phaseProbe || ph == phaseSteady }

// event is what makes a partition change phase.
type event uint8

const (
	evAcked      event = iota // a batch under the partition's producer ID was acknowledged
	evFailed                  // a batch failed, or an expired retry waits for in-flight batches
	evLostState               // a batch failed in a way that shows the broker lost our producer state
	evRewound                 // a rewind ended: nothing in flight, failed batches requeued
	evBackoffEnd              // the backoff timer fired, or no retry is left to wait for
	evNewID                   // the partition moved to a new producer ID (sequences from 0)
	evBumpAsked               // the partition asked for a new epoch (askBumpLocked)
	evClose                   // Close failed the buffered records
)

// stepLocked applies event ev to the partition's phase. Every transition:
//
//	probe   --acked-->      steady   (the broker has our state: pipeline)
//	probe|steady --failed-->  rewind   (resume where we were)
//	any sending or rewind --lostState--> rewind (resume in probe)
//	rewind  --rewound-->    epoch    (a bump this partition asked for is not installed yet)
//	rewind  --rewound-->    backoff  (retriable failure, retries waiting; timer started)
//	rewind  --rewound-->    resume
//	backoff --backoffEnd--> epoch    (as above)
//	backoff --backoffEnd--> resume   (timer, or every retry dropped: new records need no backoff)
//	probe|steady --bumpAsked--> epoch (the bump is not installed yet)
//	probe|steady|epoch --newID--> probe
//	any     --close-->      closed
//
// Any other (phase, event) pair leaves the phase as it is: an
// acknowledgement during a rewind came from a batch sent before the failure
// and proves nothing about what follows; a bump asked for during a rewind
// or backoff is waited for when it ends; a closed partition stays closed.
// Nothing is in flight in epoch (it is entered only from a sending phase
// with nothing in flight, or at a rewind's end), so no batch can fail there.
func (p *PartitionQueue) stepLocked(ev event) {
	switch {
	case ev == evClose:
		p.phase = phaseClosed
	case p.phase == phaseClosed:
	case ev == evAcked:
		if p.phase == phaseProbe {
			p.phase = phaseSteady
		}
	case ev == evFailed || ev == evLostState:
		if p.phase.sending() {
			p.resume = p.phase
		}
		if ev == evLostState {
			p.resume = phaseProbe
		}
		if p.phase != phaseBackoff {
			p.phase = phaseRewind
		}
	case ev == evRewound && p.phase == phaseRewind:
		p.phase = p.resume
		if p.awaitingEpochLocked() {
			// No backoff: the resend waits for the new epoch, and the
			// bump's own pace (the metadata refresher's) bounds the rate.
			p.phase, p.retriable = phaseEpoch, false
		} else if p.retriable && len(p.retry) > 0 {
			p.fails++
			p.phase = phaseBackoff
			p.backoffGen++
			gen := p.backoffGen
			time.AfterFunc(p.eng.backoff(p.fails), func() { p.backoffFired(gen) })
		} else if p.retriable {
			p.fails = 0
		}
		// Only definite rejections or splits leave retriable false: the
		// broker is fine, the data was not; resend what is left at once.
		p.retriable = false
	case ev == evBackoffEnd && p.phase == phaseBackoff:
		p.phase = p.resume
		if p.awaitingEpochLocked() {
			p.phase = phaseEpoch
		}
	case ev == evBumpAsked && p.phase.sending():
		if p.awaitingEpochLocked() {
			p.phase, p.resume = phaseEpoch, phaseProbe
		}
	case ev == evNewID && (p.phase.sending() || p.phase == phaseEpoch):
		p.phase, p.resume = phaseProbe, phaseProbe
	}
}

// awaitingEpochLocked reports whether the partition asked for a new epoch
// because its sequences under its producer ID broke, and the producer ID
// has not moved on yet: then it must send nothing under that ID. Once the
// ID moved on, drain switches the partition to it (switchIDLocked).
func (p *PartitionQueue) awaitingEpochLocked() bool {
	return p.id != idem.None && p.bumpFrom == p.id && p.eng.idem.Current() == p.id
}

// settleLocked ends a rewind once nothing is in flight: the failed batches
// go to the head of the queue in sequence order, expired ones fail, dropped
// sequences are renumbered, and the partition backs off or sends again.
func (p *PartitionQueue) settleLocked(now int64, failed []*Pending) []*Pending {
	if p.phase != phaseRewind || p.inflight > 0 {
		return failed
	}
	retry := append(p.rewound, p.retry...)
	p.rewound = nil
	// Responses of a dead connection and a refused write can come back out
	// of order; sequence order is what the broker needs.
	slices.SortStableFunc(retry, (*Batch).before)
	p.retry = retry
	failed = p.dropRetriesLocked(now, nil, failed)
	p.stepLocked(evRewound)
	return failed
}

// dropRetriesLocked is the one place retry batches are given up: with err
// nil, those whose delivery timeout passed (failing with the expiry error);
// otherwise all of them, with err. Each dropped batch's sequence is handled
// (dropSeqLocked), and later batches are renumbered when that is safe.
// Nothing may be in flight (their sequences would move under them).
func (p *PartitionQueue) dropRetriesLocked(now int64, err error, failed []*Pending) []*Pending {
	keep := p.retry[:0]
	for _, b := range p.retry {
		if err == nil && !due(b.deadline, now) {
			keep = append(keep, b)
			continue
		}
		cause := err
		if cause == nil {
			cause = p.expiryErrLocked()
		}
		failed = p.failBatchLocked(b, cause, b.unknown, failed)
		p.dropSeqLocked(b)
	}
	clear(p.retry[len(keep):])
	p.retry = keep
	if p.reseqAt != nil && p.id != idem.None {
		next := p.reseqAt.seq
		for _, b := range p.retry {
			if b.before(p.reseqAt) < 0 {
				continue // before the dropped batch: keeps its sequence
			}
			p.renumberLocked(b, b.id, next)
			next = addSeq(next, len(b.recs))
		}
		p.seq = next
	}
	p.reseqAt = nil
	if len(p.retry) == 0 {
		// Like Java's per-batch retry.backoff.ms: the wait is for the
		// retries; records behind them that never failed need none.
		p.stepLocked(evBackoffEnd)
	}
	return failed
}

// dropSeqLocked notes that batch b will never be sent again. If it was
// definitely not written and nothing after it was acknowledged, later
// sequences are renumbered from its own (reseqAt); otherwise only a new
// epoch makes later sequences safe.
func (p *PartitionQueue) dropSeqLocked(b *Batch) {
	if b.id == idem.None || b.id != p.id {
		return
	}
	if b.unknown || p.ackedOrd > b.ord {
		p.askBumpLocked()
		return
	}
	if p.reseqAt == nil || b.before(p.reseqAt) < 0 {
		p.reseqAt = b
	}
}

// askBumpLocked asks for a new epoch because this partition's sequences
// under its producer ID can no longer be trusted; it then sends nothing
// under that ID (phaseEpoch, entered here when sending or when the rewind
// or backoff under way ends), and its retries move to the new ID instead of
// being resent under the old one. Without a producer ID there is nothing
// to bump.
func (p *PartitionQueue) askBumpLocked() {
	if p.id == idem.None {
		return
	}
	p.bumpFrom = p.id
	p.eng.requestBump(p.id)
	p.stepLocked(evBumpAsked)
}

// switchIDLocked moves the partition to a new producer ID/epoch (KIP-360):
// sequences restart at zero. Retry batches that were definitely not written
// are renumbered; those whose outcome is unknown cannot be resent under the
// new epoch without risking a duplicate, so they fail as unknown. Only a
// partition whose own sequences broke gets here with retries (bumpFrom):
// the others send theirs under the old ID first.
func (p *PartitionQueue) switchIDLocked(cur idem.ID, failed []*Pending) []*Pending {
	p.id, p.seq = cur, 0
	p.reseqAt, p.ackedOrd, p.bumpFrom = nil, -1, idem.None
	p.stepLocked(evNewID)
	keep := p.retry[:0]
	for _, b := range p.retry {
		if b.unknown {
			failed = p.failBatchLocked(b, ErrSequenceReset, true, failed)
			continue
		}
		p.renumberLocked(b, cur, p.seq)
		p.seq = addSeq(p.seq, len(b.recs))
		keep = append(keep, b)
	}
	clear(p.retry[len(keep):])
	p.retry = keep
	return failed
}

func (p *PartitionQueue) renumberLocked(b *Batch, id idem.ID, seq int32) {
	b.id, b.seq = id, seq
	if b.bytes != nil {
		batch.SetProducer(b.bytes, id.Producer, id.Epoch, seq)
	}
}

// failBatchLocked marks every record of b failed and returns them appended
// to out for notification outside the lock.
func (p *PartitionQueue) failBatchLocked(b *Batch, err error, unknown bool, out []*Pending) []*Pending {
	for _, r := range b.recs {
		r.finishSent(b, -1, err, unknown)
	}
	return p.completeLocked(b, b.recs, out)
}

// failBuffered fails every record that is not in flight; with close, the
// partition also refuses later records (Close). Outcomes are handed out in
// send order: retry batches (each releasing what was parked behind it),
// then the buffered records — behind the batches in flight, if any, whose
// answers come later (parkUnsentLocked; at Close nothing is in flight).
func (p *PartitionQueue) failBuffered(err error, close bool) (out []*Pending) {
	p.mu.Lock()
	defer func() {
		var c *callbacks // Close (FailAll): the callback goroutines are gone, run here
		if !close && p.leader != nil {
			c = &p.leader.cb
		}
		p.unlockQueued(&out, c, false)
	}()
	if close {
		p.stepLocked(evClose)
	}
	retry := append(p.rewound, p.retry...)
	slices.SortStableFunc(retry, (*Batch).before)
	for _, b := range retry {
		out = p.failBatchLocked(b, err, b.unknown, out)
	}
	p.retry, p.rewound = nil, nil
	if close {
		// Nothing will be answered any more (the engine stopped).
		out = p.releaseAllParkedLocked(out)
		return p.failRecsLocked(err, out)
	}
	recs := p.failRecsLocked(err, p.eng.getRecSlice())
	out = p.parkUnsentLocked(recs, out)
	p.eng.putRecSlice(recs)
	return out
}

// failRecsLocked fails the buffered records (never in a batch) with err
// and appends those whose notification the caller now owns to out;
// canceled ones are dropped.
func (p *PartitionQueue) failRecsLocked(err error, out []*Pending) []*Pending {
	for _, r := range p.recs {
		if r.FailBuffered(err) {
			out = append(out, r)
		} else if r.canceled() {
			p.dropRecLocked(r)
		}
	}
	clear(p.recs)
	p.recs, p.recBytes = p.recs[:0], 0
	return out
}

// failUnsent fails the records and retry batches that wait for sink s, the
// partition's leader, when s cannot connect (authentication failed). In
// flight there is nothing: s's connection is gone. Dropped sequences are
// renumbered as after an expiry.
func (p *PartitionQueue) failUnsent(s *Sink, err error) (out []*Pending) {
	p.mu.Lock()
	defer p.unlockQueued(&out, &s.cb, false) // own held: no callback here
	if p.leader != s {
		return nil // a stale entry; the partition is queued elsewhere
	}
	p.queued = false
	out = p.failRecsLocked(err, nil)
	if p.inflight == 0 && p.phase != phaseRewind {
		out = p.dropRetriesLocked(clock.Mono(), err, out)
	}
	return out
}

// canceled reports whether the record's Send gave up before it was sent.
func (p *Pending) canceled() bool { return p.state.Load() == stateCanceled }
