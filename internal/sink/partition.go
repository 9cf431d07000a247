package sink

// Partition accumulator.
//
// Ownership: every field below mu is guarded by mu, a lock per partition
// (never one lock for the producer). Send goroutines append records; the
// leader's sink goroutine drains batches; connection reader goroutines
// complete batches. Lock order: Partition.mu before Sink.mu; no other kpush
// lock is taken while holding it (idem.Manager.Current is lock-free), and no
// Notifier runs under it.
//
// Ordering invariants:
//   - Sequence numbers are assigned when a batch is first drained and stay
//     with the batch across retries (and are split with it on
//     MESSAGE_TOO_LARGE). Batches carry an order key (ord, sub) that sorts
//     them in sequence order even across a sequence wrap.
//   - Batches of one partition are in flight on one sink (connection) at a
//     time, at most maxPartitionInflight of them, under one producer ID, so
//     the broker sees them in sequence order; until one batch under the
//     current producer ID is acknowledged on the partition, only one is in
//     flight (a broker without state for the ID takes any first sequence).
//   - When a batch fails (retriable or not), the partition "rewinds": it
//     sends nothing until every in-flight batch has come back; the failed
//     retriable batches then go to the head of the queue in order.
//   - A sequence is reused (renumbered) only for batches that were
//     definitely not written and when no later batch was acknowledged;
//     otherwise only a new producer epoch makes later sequences safe.

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/kpush/kpush/internal/batch"
	"github.com/kpush/kpush/internal/clock"
	"github.com/kpush/kpush/internal/idem"
)

// maxPartitionInflight is the broker's idempotence window: brokers remember
// the last five batches per producer and partition (KAFKA-5494).
const maxPartitionInflight = 5

// Batch is one RecordBatch of one partition, kept until its outcome is known.
type Batch struct {
	p        *Partition
	recs     []*Pending
	bytes    []byte  // encoded RecordBatch, nil until (re)encoded
	id       idem.ID // producer id/epoch the sequence belongs to
	seq      int32
	ord      int64 // drain order within the partition
	sub      int   // index of the first record within the drained batch (splits)
	deadline int64 // earliest record deadline, clock.Mono nanoseconds
	attempts int
	unknown  bool // some attempt may have reached the broker
}

func (b *Batch) before(o *Batch) int {
	return cmp.Or(cmp.Compare(b.ord, o.ord), cmp.Compare(b.sub, o.sub))
}

// addSeq advances a sequence number; sequences wrap to 0 after MaxInt32.
func addSeq(seq int32, n int) int32 {
	return int32((int64(seq) + int64(n)) % (1 << 31))
}

// Partition is one topic partition's queue of records and batches.
type Partition struct {
	Topic string
	ID    int32
	eng   *Engine

	mu        sync.Mutex
	recs      []*Pending // buffered, not yet in a batch
	recBytes  int
	retry     []*Batch // batches to send again, head first, in order
	rewound   []*Batch // failed batches collected while others are in flight
	inflight  int
	inSink    *Sink  // the sink whose connection carries the in-flight batches
	rewind    bool   // a batch failed; hold sending until inflight is zero
	reseq     bool   // a batch was dropped: renumber retries from it
	reseqAt   *Batch // the earliest dropped batch (its order key and sequence)
	ackedOrd  int64  // ord of the latest acknowledged batch under id
	nextOrd   int64
	backoff   bool // waiting for a retry backoff timer
	fails     int  // consecutive failed rounds, for backoff
	retriable bool // this rewind saw a retriable failure: back off before resending
	seq       int32
	id        idem.ID
	leader    *Sink  // current leader's sink, nil when unknown
	queued    bool   // on leader's ready list
	drainGen  uint64 // with drainSink: the request this partition was last drained into
	drainSink *Sink
	closed    bool // Close failed the buffered records; Add refuses more

	cbq cbQueue // async outcomes waiting for callbacks (callbacks.go); own lock
}

// NewPartition returns an empty partition accumulator.
func (e *Engine) NewPartition(topic string, id int32) *Partition {
	return &Partition{Topic: topic, ID: id, eng: e, id: idem.None, ackedOrd: -1}
}

// Add appends a buffered record and nudges the leader's sink when the
// partition becomes ready. It reports false, taking nothing, once the
// partition is closed (Close already failed what was buffered).
func (p *Partition) Add(r *Pending) bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	r.cbq = &p.cbq
	p.recs = append(p.recs, r)
	p.recBytes += int(r.Size)
	s := p.queueLocked()
	p.mu.Unlock()
	if s != nil {
		s.nudge()
	}
	return true
}

// SetLeader points the partition at a new leader's sink (nil when the
// partition has no leader).
func (p *Partition) SetLeader(s *Sink) {
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
func (p *Partition) Leader() *Sink {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.leader
}

// sendableLocked reports whether sink s may drain a batch now, given the
// current producer ID.
func (p *Partition) sendableLocked(s *Sink, cur idem.ID) bool {
	if s == nil || p.leader != s || p.rewind || p.backoff || p.closed {
		return false
	}
	if p.inflight > 0 {
		if p.inSink != s || p.inflight >= maxPartitionInflight || !p.eng.idem.Enabled() {
			return false
		}
		if p.id != cur {
			return false // a new producer epoch starts once the old one's batches are back
		}
		if p.ackedOrd < 0 {
			// Nothing acknowledged yet under this producer ID here: the
			// broker may have no state for it on this partition, and then
			// it accepts any sequence as the first batch (KIP-360), so a
			// second batch could be written ahead of a first one that
			// failed. One batch at a time until the first is acknowledged.
			return false
		}
	}
	return len(p.retry) > 0 || len(p.recs) > 0
}

// queueLocked puts the partition on its leader's ready list when it can
// send; it returns the sink to nudge (after unlocking) or nil.
func (p *Partition) queueLocked() *Sink {
	if p.queued || !p.sendableLocked(p.leader, p.eng.idem.Current()) {
		return nil
	}
	p.queued = true
	p.leader.pushReady(p)
	return p.leader
}

// drain takes the next batch for sink s's request number gen, or nil.
// Records and retry batches whose delivery timeout passed are failed
// (outside the lock, by the caller, through the returned list). With
// linger, a partition whose batch is not full and whose oldest record is
// younger than the linger returns no batch, stays queued, and reports when
// to look again.
func (p *Partition) drain(s *Sink, gen uint64, now int64, maxBytes int) (b *Batch, expired []*Pending, more bool, lingerUntil int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.leader != s || (p.drainSink == s && p.drainGen == gen) {
		// A stale entry (the leader moved; the partition is queued on the
		// new leader) or a second entry for this request: leave it alone.
		return nil, nil, false, 0
	}
	p.queued = false
	cur := p.eng.idem.Current() // read once: a bump may land meanwhile
	if !p.sendableLocked(s, cur) {
		return nil, nil, false, 0
	}
	if p.id != cur { // inflight is zero here (sendableLocked)
		expired = p.switchIDLocked(cur, expired)
	}
	for len(p.retry) > 0 && p.retry[0].deadline < now {
		old := p.retry[0]
		p.retry[0] = nil
		p.retry = p.retry[1:]
		expired = p.failBatchLocked(old, p.eng.expiryErr(), old.unknown, expired)
		p.dropSeqLocked(old)
	}
	if p.reseq {
		// Later sequences must be renumbered before anything is sent;
		// that happens once the in-flight batches are back.
		p.rewind = true
		if p.inflight == 0 {
			expired = p.finishRewindLocked(now, expired)
		}
		if p.sendableLocked(s, cur) { // nothing else would queue it again
			p.queued, more = true, true
		}
		return nil, expired, more, 0
	}
	if len(p.retry) > 0 {
		b = p.retry[0]
		p.retry[0] = nil
		p.retry = p.retry[1:]
	} else if len(p.recs) > 0 {
		if lg := p.eng.cfg.Linger; lg > 0 && p.recBytes+batch.BatchOverhead < maxBytes {
			if until := p.recs[0].Enqueued + int64(lg); until > now {
				p.queued = true
				return nil, expired, true, until
			}
		}
		b, expired = p.takeRecordsLocked(now, maxBytes, expired)
	}
	if b != nil {
		b.attempts++
		p.inflight++
		p.inSink = s
		p.drainGen, p.drainSink = gen, s
	}
	if p.sendableLocked(s, cur) {
		p.queued = true
		more = true
	}
	return b, expired, more, 0
}

// takeRecordsLocked builds a new batch from the buffered records.
func (p *Partition) takeRecordsLocked(now int64, maxBytes int, expired []*Pending) (*Batch, []*Pending) {
	size := batch.BatchOverhead
	n := 0 // records consumed from p.recs
	var recs []*Pending
	var deadline int64
	for n < len(p.recs) {
		r := p.recs[n]
		if len(recs) > 0 && size+int(r.Size) > maxBytes {
			break
		}
		n++
		p.recBytes -= int(r.Size)
		if r.Deadline < now {
			if r.FailBuffered(p.eng.expiryErr()) {
				expired = append(expired, r)
			}
			continue
		}
		if !r.claim() {
			continue // canceled or failed meanwhile
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
		p.recBytes = 0
	} else {
		p.recs = p.recs[n:]
	}
	if len(recs) == 0 {
		return nil, expired
	}
	b := &Batch{p: p, recs: recs, id: p.id, seq: p.seq, ord: p.nextOrd, deadline: deadline}
	p.nextOrd++
	if p.id != idem.None {
		p.seq = addSeq(p.seq, len(recs))
	}
	return b, expired
}

// switchIDLocked moves the partition to a new producer ID/epoch (KIP-360):
// sequences restart at zero. Retry batches that were definitely not written
// are renumbered; those whose outcome is unknown cannot be resent under the
// new epoch without risking a duplicate, so they fail as unknown.
func (p *Partition) switchIDLocked(cur idem.ID, failed []*Pending) []*Pending {
	p.id, p.seq = cur, 0
	p.reseq, p.reseqAt, p.ackedOrd = false, nil, -1
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

func (p *Partition) renumberLocked(b *Batch, id idem.ID, seq int32) {
	b.id, b.seq = id, seq
	if b.bytes != nil {
		batch.SetProducer(b.bytes, id.Producer, id.Epoch, seq)
	}
}

// failBatchLocked marks every record of b failed and returns them appended
// to out for notification outside the lock.
func (p *Partition) failBatchLocked(b *Batch, err error, unknown bool, out []*Pending) []*Pending {
	for _, r := range b.recs {
		r.finishSent(-1, err, unknown)
	}
	return append(out, b.recs...)
}

// finishRewindLocked runs when the last in-flight batch of a rewinding
// partition is back: failed batches go to the head of the queue in order
// (after a backoff), expired ones fail, dropped sequences are renumbered.
func (p *Partition) finishRewindLocked(now int64, failed []*Pending) []*Pending {
	p.rewind = false
	retry := append(p.rewound, p.retry...)
	p.rewound = nil
	// Responses of a dead connection and a refused write can come back out
	// of order; sequence order is what the broker needs.
	slices.SortStableFunc(retry, (*Batch).before)
	p.retry = retry[:0]
	for _, b := range retry {
		if b.deadline < now {
			failed = p.failBatchLocked(b, p.eng.expiryErr(), b.unknown, failed)
			p.dropSeqLocked(b)
			continue
		}
		p.retry = append(p.retry, b)
	}
	if p.reseq && p.id != idem.None {
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
	p.reseq, p.reseqAt = false, nil
	if !p.retriable {
		// Only definite rejections or splits: the broker is fine, the data
		// was not; resend what is left at once.
		return failed
	}
	p.retriable = false
	if len(p.retry) > 0 {
		p.fails++
		p.backoff = true
		time.AfterFunc(p.eng.backoff(p.fails), p.endBackoff)
	} else {
		p.fails = 0
	}
	return failed
}

// dropSeqLocked notes that batch b will never be sent again. If it was
// definitely not written and nothing after it was acknowledged, later
// sequences are renumbered from its own; otherwise only a new epoch makes
// later sequences safe.
func (p *Partition) dropSeqLocked(b *Batch) {
	if b.id == idem.None || b.id != p.id {
		return
	}
	if b.unknown || p.ackedOrd > b.ord {
		p.eng.requestBump(b.id)
		return
	}
	if !p.reseq || b.before(p.reseqAt) < 0 {
		p.reseqAt = b
	}
	p.reseq = true
}

// Requeue puts the partition on its leader's ready list if it can send
// (after a producer-ID change).
func (p *Partition) Requeue() {
	p.mu.Lock()
	s := p.queueLocked()
	p.mu.Unlock()
	if s != nil {
		s.nudge()
	}
}

func (p *Partition) endBackoff() {
	p.mu.Lock()
	p.backoff = false
	s := p.queueLocked()
	p.mu.Unlock()
	if s != nil {
		s.nudge()
	}
}

// failBuffered fails every record that is not in flight; with close, the
// partition also refuses later records (Close).
func (p *Partition) failBuffered(err error, close bool) []*Pending {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = p.closed || close
	out := p.failRecsLocked(err, nil)
	for _, b := range append(p.rewound, p.retry...) {
		out = p.failBatchLocked(b, err, b.unknown, out)
	}
	p.retry, p.rewound = nil, nil
	return out
}

// failRecsLocked fails the buffered records (never in a batch) with err
// and appends those whose notification the caller now owns to out.
func (p *Partition) failRecsLocked(err error, out []*Pending) []*Pending {
	for _, r := range p.recs {
		if r.FailBuffered(err) {
			out = append(out, r)
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
func (p *Partition) failUnsent(s *Sink, err error) []*Pending {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.leader != s {
		return nil // a stale entry; the partition is queued elsewhere
	}
	p.queued = false
	out := p.failRecsLocked(err, nil)
	if p.inflight == 0 && !p.rewind {
		for _, b := range p.retry {
			out = p.failBatchLocked(b, err, b.unknown, out)
			p.dropSeqLocked(b)
		}
		clear(p.retry)
		p.retry = p.retry[:0]
		if p.reseq {
			out = p.finishRewindLocked(clock.Mono(), out)
		}
	}
	return out
}

// expireBuffered fails records whose delivery timeout passed while the
// partition could not send (no leader, broker down, backoff). It returns
// them and the sink whose callback goroutine should run async callbacks.
func (p *Partition) expireBuffered(now int64) ([]*Pending, *Sink) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*Pending
	if len(p.recs) > 0 && p.recs[0].Deadline < now {
		keep := p.recs[:0]
		for _, r := range p.recs {
			if r.Deadline < now {
				if r.FailBuffered(p.eng.expiryErr()) {
					out = append(out, r)
				}
				p.recBytes -= int(r.Size)
				continue
			}
			keep = append(keep, r)
		}
		clear(p.recs[len(keep):])
		p.recs = keep
	}
	if p.inflight == 0 && !p.rewind && len(p.retry) > 0 && p.retry[0].deadline < now {
		keep := p.retry[:0]
		for _, b := range p.retry {
			if b.deadline < now {
				out = p.failBatchLocked(b, p.eng.expiryErr(), b.unknown, out)
				p.dropSeqLocked(b)
				continue
			}
			keep = append(keep, b)
		}
		clear(p.retry[len(keep):])
		p.retry = keep
		if p.reseq {
			out = p.finishRewindLocked(now, out)
		}
	}
	return out, p.leader
}

// DebugString describes the partition's state, for tests and debugging.
func (p *Partition) DebugString() string {
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
	return fmt.Sprintf("%s[%d] recs=%d retry=%v rewound=%d inflight=%d inSink=%d leader=%d rewind=%v reseq=%v backoff=%v queued=%v fails=%d seq=%d id=%v cur=%v closed=%v",
		p.Topic, p.ID, len(p.recs), rs, len(p.rewound), p.inflight, node(p.inSink), node(p.leader), p.rewind, p.reseq, p.backoff, p.queued, p.fails, p.seq, p.id, p.eng.idem.Current(), p.closed)
}
