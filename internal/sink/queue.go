package sink

// PartitionQueue: one partition's accumulator and its sending state machine.
//
// Ownership: every field below mu is guarded by mu, a lock per partition
// (never one lock for the producer). Send goroutines append records and
// cancel buffered ones; the leader's sink goroutine drains batches;
// connection reader goroutines complete batches; the reaper expires; a
// backoff timer (time.AfterFunc, at most one per partition at a time) ends
// a backoff. Lock order: PartitionQueue.mu before Sink.mu, before recMu
// and before the partition's cbQueue.mu (async outcomes are queued before
// the partition is unlocked: callbacks.go); no other kpush lock is taken
// while holding it (idem.Manager.Current is lock-free), and no Notifier or
// Config.Release* hook runs under it: outcomes are returned to the caller
// or queued for the callback goroutine, and the space of dropped canceled
// records is released by unlock.
//
// State: phase (see phase.go) says whether the partition may send and how
// many batches it may keep in flight; every change of phase goes through
// stepLocked. The other fields are data: the queues, sequence numbers, the
// in-flight count and the ready-list bookkeeping (queued, drainGen).
//
// Ordering invariants:
//   - Sequence numbers are assigned when a batch is first drained and stay
//     with the batch across retries (and are split with it on
//     MESSAGE_TOO_LARGE). Batches carry an order key (ord, sub) that sorts
//     them in sequence order even across a sequence wrap.
//   - Batches of one partition are in flight on one sink (connection) at a
//     time, at most maxPartitionInflight of them, under one producer ID, so
//     the broker sees them in sequence order; in phaseProbe only one is in
//     flight (a broker without state for the ID takes any first sequence).
//   - When a batch fails (retriable or not), the partition rewinds: it
//     sends nothing until every in-flight batch has come back; the failed
//     retriable batches then go to the head of the queue in order.
//   - A sequence is reused (renumbered) only for batches that were
//     definitely not written and when no later batch was acknowledged;
//     otherwise only a new producer epoch makes later sequences safe.
//   - Retry batches of a partition whose own sequences are fine keep their
//     old producer ID after another partition's epoch bump: the broker still
//     holds that ID's state here. The partition moves to the new ID once they
//     are done. A partition whose own sequences broke (bumpFrom) sends
//     nothing, retries or new records, until the new ID is installed
//     (phaseEpoch).
//   - Bytes held: a buffered record keeps its buffer space until it has an
//     outcome or, when its Send gave up (canceled), until the partition drops
//     it from recs; canceled records are dropped when they are half of recs,
//     or at the next drain or expiry.

import (
	"cmp"
	"fmt"
	"sync"

	"github.com/kpush/kpush/internal/batch"
	"github.com/kpush/kpush/internal/idem"
)

// maxPartitionInflight is the broker's idempotence window: brokers remember
// the last five batches per producer and partition (KAFKA-5494).
const maxPartitionInflight = 5

// Batch is one RecordBatch of one partition, kept until its outcome is known.
type Batch struct {
	p        *PartitionQueue
	recs     []*Pending
	bytes    []byte  // encoded RecordBatch, nil until (re)encoded
	id       idem.ID // producer id/epoch the sequence belongs to
	seq      int32
	ord      int64 // drain order within the partition
	sub      int   // index of the first record within the drained batch (splits)
	deadline int64 // earliest record deadline, clock.Mono nanoseconds
	size     int   // record bytes plus batch overhead (before compression)
	attempts int
	unknown  bool // some attempt may have reached the broker
	// With Hooks.Stamps (hooks.go): when the request carrying the batch
	// was written (by the loop, before the write), and its answer's time
	// while handle applies it (under the partition's mu; 0 otherwise).
	written, answered int64
}

// wireSize is the batch's size in a request: encoded, or an upper bound
// before encoding (compression only shrinks it).
func (b *Batch) wireSize() int {
	if b.bytes != nil {
		return len(b.bytes)
	}
	return b.size
}

// framing bounds the bytes a request spends on one partition besides its
// batch: topic name, partition number, length prefixes.
func framing(p *PartitionQueue) int { return 16 + len(p.Topic) }

func (b *Batch) before(o *Batch) int {
	return comparePlace(b.ord, b.sub, o.ord, o.sub)
}

// comparePlace orders two places (ord, sub) in a partition's send order:
// batches, parked outcomes (callbacks.go) and a reaper pass's groups of
// outcomes (expire.go).
func comparePlace(ordA int64, subA int, ordB int64, subB int) int {
	return cmp.Or(cmp.Compare(ordA, ordB), cmp.Compare(subA, subB))
}

// addSeq advances a sequence number; sequences wrap to 0 after MaxInt32.
func addSeq(seq int32, n int) int32 {
	return int32((int64(seq) + int64(n)) % (1 << 31))
}

// PartitionQueue is one topic partition's queue of records and batches.
type PartitionQueue struct {
	Topic string
	ID    int32
	eng   *Engine

	mu         sync.Mutex
	phase      phase      // changed only by stepLocked
	resume     phase      // phaseProbe or phaseSteady: where a rewind or backoff ends
	retriable  bool       // in phaseRewind: a retriable failure was seen, back off before resending
	recs       []*Pending // buffered, not yet in a batch (canceled ones too, until dropped)
	recBytes   int        // Size of recs, canceled ones included
	canceled   int        // records of recs whose Send gave up
	retry      []*Batch   // batches to send again, head first, in order
	rewound    []*Batch   // failed batches collected while others are in flight
	inflight   int
	inSink     *Sink   // the sink whose connection carries the in-flight batches
	reseqAt    *Batch  // the earliest dropped, not-written batch: renumber from it; nil when none
	ackedOrd   int64   // ord of the latest acknowledged batch under id
	nextOrd    int64   // ord of the next batch drained
	answered   int64   // highest ord of a batch whose request was answered (callbacks.go)
	fails      int     // consecutive failed rounds, for backoff
	backoffGen uint32  // number of the latest backoff, so a stale timer is ignored
	seq        int32   // next sequence under id
	id         idem.ID // producer ID of the partition's sequences
	bumpFrom   idem.ID // this partition's sequences broke under this ID: it asked for a new epoch
	leader     *Sink   // current leader's sink, nil when unknown
	queued     bool    // on leader's ready list
	drainGen   uint64  // with drainSink: the request this partition was last drained into
	drainSink  *Sink

	// Callback order across retries (callbacks.go): failed batches whose
	// async outcomes later ones wait for, and those later outcomes.
	blocked []*Batch
	parked  []parkedOutcome

	// ExpireAll's pass (expire.go) that expired this partition with its
	// batches in flight, and the earliest deadline it found then.
	expiredPass uint64
	expiredNext int64

	// Space of canceled records dropped under mu, released by unlock.
	relRecs  int
	relBytes int64

	cbq cbQueue // async outcomes waiting for callbacks (callbacks.go); own lock

	// recMu is held while the engine reads the caller's memory of this
	// partition's records in a batch (Sink.encode), and while a record a
	// batch still holds gets its outcome early (expireSent, TryAbandon),
	// which first copies its key, value and headers into kpush's memory
	// (Pending.own). So once an outcome is delivered, the caller's memory
	// is never read again. Taken under mu or Sink.rmu, or alone; nothing is
	// taken under it.
	recMu sync.Mutex
}

// NewPartitionQueue returns an empty partition accumulator.
func (e *Engine) NewPartitionQueue(topic string, id int32) *PartitionQueue {
	p := &PartitionQueue{Topic: topic, ID: id, eng: e, id: idem.None, bumpFrom: idem.None,
		ackedOrd: -1, answered: -1, phase: phaseProbe, resume: phaseProbe}
	p.cbq.part = p
	return p
}

// unlock releases mu, then the buffer space of canceled records dropped
// while it was held.
func (p *PartitionQueue) unlock() {
	n, bytes := p.relRecs, p.relBytes
	p.relRecs, p.relBytes = 0, 0
	p.mu.Unlock()
	if n > 0 {
		p.eng.cfg.ReleaseCanceled(n, bytes)
	}
}

// unlockQueued moves the async outcomes among *out, completed under mu, to
// p's callback queue before unlocking (queueAsync: a later outcome of p,
// completed by another goroutine once p is unlocked, must queue behind
// them), then unlocks and starts the queue on c. *out keeps the rest, for
// notifyAll. inline is startQueues'.
func (p *PartitionQueue) unlockQueued(out *[]*Pending, c *callbacks, inline bool) {
	var st cbStarts
	*out = p.eng.queueAsync(*out, 0, false, &st)
	p.unlock()
	p.eng.startQueues(&st, c, inline)
}

// Add appends a buffered record and nudges the leader's sink when the
// partition becomes ready. It reports false, taking nothing, once the
// partition is closed (Close already failed what was buffered).
func (p *PartitionQueue) Add(r *Pending) bool {
	// Read before r is queued: it may be sent, done and reused before Add returns.
	nudge, ownRead, until := r.Async && !r.Inline, r.OwnRead, r.Deadline
	p.mu.Lock()
	if p.phase == phaseClosed {
		p.mu.Unlock()
		return false
	}
	r.cbq = &p.cbq
	p.recs = append(p.recs, r)
	p.recBytes += int(r.Size)
	lead, size := p.leader, int64(r.Size)
	s := p.queueLocked()
	p.mu.Unlock()
	if lead != nil {
		lead.added(size) // may end a coalescing wait (coalesce.go)
	}
	if s != nil {
		if nudge {
			s.nudge() // the sender goes on enqueueing; the loop writes meanwhile
		} else {
			s.kick(ownRead, until) // a Send's or an inline record: written here if the sink is idle
		}
	}
	return true
}

// Cancel withdraws a buffered record whose Send gave up (its ctx ended).
// It reports false when the record is already being sent or has an outcome.
// The record keeps its buffer space until the partition drops it, so the
// memory bound counts it; Release is not called for it, nor Notify.
func (p *PartitionQueue) Cancel(r *Pending) bool {
	p.mu.Lock()
	if !r.TryCancel() {
		p.mu.Unlock()
		return false
	}
	p.canceled++
	if 2*p.canceled > len(p.recs) {
		p.dropCanceledLocked()
	}
	p.unlock()
	return true
}

// dropCanceledLocked removes the canceled records from recs, keeping the
// others in order.
func (p *PartitionQueue) dropCanceledLocked() {
	if p.canceled == 0 {
		return
	}
	keep := p.recs[:0]
	for _, r := range p.recs {
		if r.canceled() {
			p.dropRecLocked(r)
			continue
		}
		keep = append(keep, r)
	}
	clear(p.recs[len(keep):])
	p.recs = keep
}

// dropRecLocked accounts for a canceled record leaving recs.
func (p *PartitionQueue) dropRecLocked(r *Pending) {
	p.canceled = max(p.canceled-1, 0) // only Cancel cancels, so never below zero
	p.recBytes -= int(r.Size)
	p.relRecs++
	p.relBytes += int64(r.Size)
}

// SetLeader points the partition at a new leader's sink (nil when the
// partition has no leader).
func (p *PartitionQueue) SetLeader(s *Sink) {
	p.mu.Lock()
	if p.leader == s {
		p.mu.Unlock()
		return
	}
	p.leader = s
	p.queued = false // a stale entry on the old sink's list is skipped there
	q := p.queueLocked()
	p.mu.Unlock()
	if q != nil {
		q.nudge()
	}
}

// Leader returns the current leader's sink.
func (p *PartitionQueue) Leader() *Sink {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.leader
}

// sendableLocked reports whether sink s may drain a batch now, given the
// current producer ID.
func (p *PartitionQueue) sendableLocked(s *Sink, cur idem.ID) bool {
	if s == nil || p.leader != s {
		return false
	}
	if p.phase == phaseEpoch {
		if p.id == cur {
			return false // waiting for the new epoch
		}
		// It is installed: drain switches to it (nothing is in flight).
	} else if !p.phase.sending() {
		return false
	}
	if p.inflight > 0 {
		if p.inSink != s || p.inflight >= maxPartitionInflight || !p.eng.idem.Enabled() {
			return false
		}
		if p.phase == phaseProbe {
			// The broker may hold no state for this producer ID here;
			// then it accepts any sequence as the first batch (KIP-360),
			// and a second batch could be written ahead of a first that
			// failed. One batch at a time until one is acknowledged.
			return false
		}
		if p.id != cur {
			return false // a new producer epoch starts once the old one's batches are back
		}
	}
	return len(p.retry) > 0 || len(p.recs) > p.canceled
}

// queueLocked puts the partition on its leader's ready list when it can
// send; it returns the sink to nudge (after unlocking) or nil.
func (p *PartitionQueue) queueLocked() *Sink {
	if p.queued || !p.sendableLocked(p.leader, p.eng.idem.Current()) {
		return nil
	}
	p.queued = true
	p.leader.pushReady(p)
	return p.leader
}

// drain takes the next batch for sink s's request number gen, at most
// maxBytes large (a retry batch larger than that stays queued unless
// maxBytes is the whole batch limit), or nil. Records and retry batches
// whose delivery timeout passed are failed (outside the lock, by the caller,
// through the returned list). more reports that the partition stays on s's
// ready list (the caller puts it back) and has a batch to give now, unless
// lingerUntil is set: with linger, a partition whose batch is not full and
// whose oldest record is younger than the linger returns no batch and
// reports when to look again.
func (p *PartitionQueue) drain(s *Sink, gen uint64, now int64, maxBytes int) (b *Batch, expired []*Pending, more bool, lingerUntil int64) {
	p.mu.Lock()
	defer p.unlockQueued(&expired, &s.cb, false) // own held: no callback here
	if p.leader != s || (p.drainSink == s && p.drainGen == gen) {
		// A stale entry (the leader moved; the partition is queued on the
		// new leader) or a second entry for this request: leave it alone.
		return nil, nil, false, 0
	}
	p.queued = false
	p.dropCanceledLocked()
	cur := p.eng.idem.Current() // read once: a bump may land meanwhile
	if !p.sendableLocked(s, cur) {
		return nil, nil, false, 0
	}
	if p.retryDueLocked(now) {
		if p.inflight > 0 {
			// Dropping it may renumber later sequences, which must wait
			// for the batches in flight: rewind, the last one settles.
			p.stepLocked(evFailed)
			return nil, expired, false, 0
		}
		// Nothing in flight: drop it now and go on to send what follows
		// in this same call (returning no batch while queued would leave
		// the sink asleep with the partition on its list: issue 11 #1).
		expired = p.dropRetriesLocked(now, nil, expired)
		if !p.sendableLocked(s, cur) {
			return nil, expired, false, 0
		}
	}
	if p.id != cur && p.inflight == 0 && (len(p.retry) == 0 || p.bumpFrom == p.id) {
		// A partition with retries under the old ID sends them first; the
		// broker keeps that ID's state (only ours broke if we asked).
		expired = p.switchIDLocked(cur, expired)
		if !p.sendableLocked(s, cur) {
			return nil, expired, false, 0
		}
	}
	if len(p.retry) > 0 {
		if r := p.retry[0]; r.wireSize() <= maxBytes || maxBytes >= p.eng.cfg.MaxBatchBytes {
			b = r
			p.retry[0] = nil
			p.retry = p.retry[1:]
		}
	} else if p.id == cur {
		if lg := p.eng.cfg.Linger; lg > 0 && p.recBytes+batch.BatchOverhead < maxBytes {
			if until := p.recs[0].Enqueued + int64(lg); until > now {
				p.queued = true
				return nil, expired, true, until
			}
		}
		b, expired = p.takeRecordsLocked(now, maxBytes, expired)
	}
	if b == nil {
		// Everything found had expired or been canceled, or the next batch
		// does not fit this request (which then carries others, so the
		// sink loops and drains again): stay on the list if there is more.
		if p.sendableLocked(s, cur) {
			p.queued, more = true, true
		}
		return nil, expired, more, 0
	}
	b.attempts++
	p.inflight++
	p.inSink = s
	p.drainGen, p.drainSink = gen, s
	if p.sendableLocked(s, cur) {
		p.queued = true
		more = true
	}
	return b, expired, more, 0
}

// takeRecordsLocked builds a new batch from the buffered records.
func (p *PartitionQueue) takeRecordsLocked(now int64, maxBytes int, expired []*Pending) (*Batch, []*Pending) {
	size := batch.BatchOverhead
	n := 0 // records consumed from p.recs
	var recs []*Pending
	var deadline int64
	for n < len(p.recs) {
		r := p.recs[n]
		if len(recs) > 0 && size+int(r.Size) > maxBytes {
			break
		}
		if len(recs) == 0 && size+int(r.Size) > maxBytes && maxBytes < p.eng.cfg.MaxBatchBytes {
			break // does not fit this request; it will fit the next one
		}
		n++
		p.recBytes -= int(r.Size)
		if due(r.Deadline, now) {
			if r.FailBuffered(p.expiryErrLocked()) {
				expired = append(expired, r)
			} else {
				p.recBytes += int(r.Size) // canceled: dropRecLocked counts it
				p.dropRecLocked(r)
			}
			continue
		}
		if !r.claim() {
			p.recBytes += int(r.Size)
			p.dropRecLocked(r) // canceled meanwhile (only Cancel, under mu, cancels)
			continue
		}
		if recs == nil {
			recs = p.eng.getRecSlice()
		}
		recs = append(recs, r)
		size += int(r.Size)
		if deadline == 0 || r.Deadline < deadline {
			deadline = r.Deadline
		}
	}
	clear(p.recs[:n])
	if n == len(p.recs) {
		// Reuse the array: under load the queue refills to a similar size.
		if cap(p.recs) > 1<<16 {
			p.recs = nil
		} else {
			p.recs = p.recs[:0]
		}
	} else {
		p.recs = p.recs[n:]
	}
	if len(recs) == 0 {
		return nil, expired
	}
	b := &Batch{p: p, recs: recs, id: p.id, seq: p.seq, ord: p.nextOrd, deadline: deadline, size: size}
	p.nextOrd++
	if p.id != idem.None {
		p.seq = addSeq(p.seq, len(recs))
	}
	return b, expired
}

// Requeue puts the partition on its leader's ready list if it can send
// (after a producer-ID change).
func (p *PartitionQueue) Requeue() {
	p.mu.Lock()
	s := p.queueLocked()
	p.mu.Unlock()
	if s != nil {
		s.nudge()
	}
}

// backoffFired runs on the timer goroutine of backoff number gen; a timer
// of a backoff that already ended (its retries were dropped) does nothing.
func (p *PartitionQueue) backoffFired(gen uint32) {
	p.mu.Lock()
	var s *Sink
	if gen == p.backoffGen {
		p.stepLocked(evBackoffEnd)
		s = p.queueLocked()
	}
	p.mu.Unlock()
	if s != nil {
		s.nudge()
	}
}

// endBackoff ends the current backoff, if any (tests drive it directly).
func (p *PartitionQueue) endBackoff() { p.backoffFired(p.curBackoff()) }

func (p *PartitionQueue) curBackoff() uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.backoffGen
}

// DebugString describes the partition's state, for tests and debugging.
func (p *PartitionQueue) DebugString() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	node := func(s *Sink) int32 {
		if s == nil {
			return -1
		}
		return s.Node
	}
	var rs []string
	for _, b := range p.retry {
		rs = append(rs, fmt.Sprintf("seq%d/n%d/unk%v/att%d", b.seq, len(b.recs), b.unknown, b.attempts))
	}
	return fmt.Sprintf("%s[%d] phase=%v resume=%v recs=%d canceled=%d retry=%v rewound=%d inflight=%d inSink=%d leader=%d reseq=%v queued=%v fails=%d seq=%d id=%v cur=%v",
		p.Topic, p.ID, p.phase, p.resume, len(p.recs), p.canceled, rs, len(p.rewound), p.inflight, node(p.inSink), node(p.leader), p.reseqAt != nil, p.queued, p.fails, p.seq, p.id, p.eng.idem.Current())
}

// Held reports the records and bytes the partition holds that are not in
// flight: buffered (canceled ones not yet dropped included) and waiting for
// a retry. For tests of the memory bound.
func (p *PartitionQueue) Held() (recs int, bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	recs, bytes = len(p.recs), int64(p.recBytes)
	for _, q := range [][]*Batch{p.rewound, p.retry} {
		for _, b := range q {
			for _, r := range b.recs {
				recs++
				bytes += int64(r.Size)
			}
		}
	}
	return recs, bytes
}
