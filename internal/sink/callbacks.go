package sink

// Asynchronous callbacks.
//
// Ownership: every partition has a cbQueue of async outcomes waiting for
// their callbacks; its mu guards recs, spare and running. A queue with
// records is "running": it is scheduled on exactly one callback goroutine
// (a sink's callbacks.run), or being drained inline by the goroutine that
// found that goroutine closed, or by the connection reader or reaper that
// completed its Inline records (runInline; never a goroutine holding
// Sink.own). Only the goroutine running a queue delivers
// its records, one snapshot at a time, so one partition's callbacks run in
// order even when its leader moves: completions from the new leader join
// the same queue, behind the old leader's. For that, a goroutine that
// completes a partition's records queues the async ones while it still
// holds the partition's mu — or, for batches in flight (the reaper), their
// sink's rmu, which a response's reader takes (untrack) before it handles
// them — in queueAsync, and starts the queue (wakes a callback goroutine
// or runs it inline) only once it holds no lock (startQueues); a queue it
// made running is its own to start until then. callbacks.mu guards a
// sink's list of scheduled queues and closed. Lock order:
// PartitionQueue.mu → cbQueue.mu and Sink.rmu → cbQueue.mu (the reaper
// also takes Sink.rmu → PartitionQueue.mu, expire.go); nothing is
// taken under cbQueue.mu, and callbacks.mu is never held with another lock.
// PartitionQueue.blocked and parked (order across retries, below) are
// guarded by the partition's mu and touched by whichever goroutine holds
// it to complete a batch (reader, reaper, sink loop, Close).

import (
	"slices"
	"sync"

	"github.com/kpush/kpush/internal/clock"
)

// cbQueue is one partition's async outcomes, in completion order.
type cbQueue struct {
	mu      sync.Mutex
	recs    []*Pending
	spare   []*Pending
	running bool // scheduled on a callback goroutine, or drained inline

	part *PartitionQueue // the queue's partition; set once at creation

	// next links the queue on the cbStarts of the goroutine that made it
	// running in queueAsync, until that goroutine starts it; only that
	// goroutine touches it.
	next *cbQueue
}

// callbacks is one sink's callback goroutine: it runs the queues scheduled
// on it, one snapshot of each at a time (round robin, so a partition with a
// steady stream of completions does not starve the others). Once that
// goroutine has exited (closed), queues scheduled on it are drained inline
// instead, so a late expiry or failure during Close still reaches its
// callback.
type callbacks struct {
	eng    *Engine
	mu     sync.Mutex
	queue  []*cbQueue
	spare  []*cbQueue
	wake   chan struct{}
	closed bool
}

// pushAsync hands async records to their partitions' queues; a queue that
// was idle is scheduled on c (nil: drained inline on this goroutine).
// Records of one partition are contiguous in recs (one batch each). inline
// allows running Inline records' callbacks here (runInline): only a
// connection reader handling a response and the reaper pass true, which
// hold no kpush lock and are nobody's caller; a sink loop or a Send caller
// writing inline holds Sink.own, and must not run a user's callback.
func (e *Engine) pushAsync(recs []*Pending, c *callbacks, inline bool) {
	for len(recs) > 0 {
		q := recs[0].cbq
		n := 1
		for n < len(recs) && recs[n].cbq == q {
			n++
		}
		run := recs[:n]
		recs = recs[n:]
		if q == nil { // not from a partition (tests): deliver at once
			e.deliver(run)
			continue
		}
		q.mu.Lock()
		q.recs = append(q.recs, run...)
		idle := !q.running
		q.running = true
		q.mu.Unlock()
		switch {
		case !idle:
		case inline && allInline(run):
			e.runInline(q, c)
		default:
			e.schedule(q, c)
		}
	}
}

// cbStarts lists the callback queues a goroutine made running in
// queueAsync, under a lock, and must start once it holds none
// (startQueues), in the order it made them running. A queue is on at most
// one list: that of the goroutine that set its running.
type cbStarts struct{ head, tail *cbQueue }

func (st *cbStarts) add(q *cbQueue) {
	if st.tail == nil {
		st.head = q
	} else {
		st.tail.next = q
	}
	st.tail = q
}

// queueAsync moves the async outcomes among recs[from:] to their
// partitions' callback queues, in order, and returns recs with the others
// kept in order (for notifyAll or notifyExpired): sync records, and those
// whose outcome went out already at their deadline (HeldByBatch: only
// their space is left to release). With expired, recs are outcomes given
// at their deadline now (expireSent), and async ones are queued whether
// or not a batch holds them. Records not from a partition (tests) stay.
//
// The caller holds the lock that keeps later outcomes of these partitions
// from being completed meanwhile: the partition's mu, or, for batches in
// flight, their sink's rmu (a response is untracked before it is handled).
// So a later outcome — even one its new leader's reader completes as soon
// as the partition is unlocked — queues behind these. A queue found idle
// becomes running and goes on st: the caller starts it once it holds no
// lock (startQueues), where pushAsync would have. The moved records must
// not be read after: a running queue may deliver them and their owner
// recycle them at once.
func (e *Engine) queueAsync(recs []*Pending, from int, expired bool, st *cbStarts) []*Pending {
	queued := func(r *Pending) bool { return r.Async && r.cbq != nil && (expired || !r.HeldByBatch()) }
	n, i := from, from
	for i < len(recs) {
		r := recs[i]
		if !queued(r) {
			recs[n] = r
			n++
			i++
			continue
		}
		q := r.cbq
		j := i + 1
		for j < len(recs) && recs[j].cbq == q && queued(recs[j]) {
			j++
		}
		q.mu.Lock()
		q.recs = append(q.recs, recs[i:j]...)
		if !q.running {
			q.running = true
			st.add(q)
		}
		q.mu.Unlock()
		i = j
	}
	clear(recs[n:])
	return recs[:n]
}

// startQueues starts the queues on st (queueAsync) as pushAsync starts a
// queue it found idle: inline (runInline: its records are all Inline, on a
// connection reader or the reaper) or on c. The caller holds no kpush lock
// but perhaps Sink.own (then inline is false).
func (e *Engine) startQueues(st *cbStarts, c *callbacks, inline bool) {
	q := st.head
	st.head, st.tail = nil, nil
	for q != nil {
		next := q.next
		q.next = nil // before it is started: then it may go on another list
		if inline {
			e.runInline(q, c) // schedules q on c unless every record is Inline
		} else {
			e.schedule(q, c)
		}
		q = next
	}
}

// allInline reports whether every record's Notify may run inline
// (Pending.Inline).
func allInline(recs []*Pending) bool {
	for _, r := range recs {
		if !r.Inline {
			return false
		}
	}
	return true
}

// maxInlineRounds bounds one runInline call: after that many snapshots
// (records kept arriving while it delivered) the queue goes to the
// callback goroutine, so a reader is not kept from its connection's next
// responses by a partition whose records keep completing inline.
const maxInlineRounds = 8

// runInline delivers a running queue on this goroutine (the one that
// completed its records: a connection reader or the reaper) as
// long as every record waiting in it is Inline: their callbacks are quick
// and never block, so this saves waking the callback goroutine (a hand-off
// per response at C=1). A queue that holds another record is scheduled on
// c as pushAsync would have, behind nothing: order per partition is kept
// because only the goroutine that set running delivers the queue. At most
// maxInlineRounds snapshots are delivered here; then the queue is scheduled
// on c the same way.
func (e *Engine) runInline(q *cbQueue, c *callbacks) {
	for round := 0; ; round++ {
		q.mu.Lock()
		if round == maxInlineRounds || !allInline(q.recs) {
			q.mu.Unlock()
			e.schedule(q, c)
			return
		}
		recs := q.takeLocked()
		q.mu.Unlock()
		if !e.deliverSnapshot(q, recs) {
			return
		}
	}
}

// schedule gives a running queue to c's goroutine, or drains it inline
// when there is none.
func (e *Engine) schedule(q *cbQueue, c *callbacks) {
	if c != nil {
		c.mu.Lock()
		if !c.closed {
			c.queue = append(c.queue, q)
			c.mu.Unlock()
			select {
			case c.wake <- struct{}{}:
			default:
			}
			return
		}
		c.mu.Unlock()
	}
	for e.runOnce(q) {
	}
}

// runOnce delivers one snapshot of q and reports whether q is still
// running (more records arrived meanwhile); the caller keeps it.
func (e *Engine) runOnce(q *cbQueue) bool {
	q.mu.Lock()
	recs := q.takeLocked()
	q.mu.Unlock()
	return e.deliverSnapshot(q, recs)
}

// takeLocked takes q's records as one snapshot, leaving the spare slice
// for records that arrive meanwhile. Under q.mu.
func (q *cbQueue) takeLocked() []*Pending {
	recs := q.recs
	q.recs, q.spare = q.spare[:0], nil
	return recs
}

// deliverSnapshot delivers recs (taken from q by takeLocked), gives their
// slice back as q's spare, and reports whether q is still running (more
// records arrived meanwhile); when it is not, q is idle again.
func (e *Engine) deliverSnapshot(q *cbQueue, recs []*Pending) bool {
	e.deliver(recs)
	clear(recs)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.spare == nil {
		q.spare = recs[:0]
	}
	if len(q.recs) == 0 {
		q.running = false
		return false
	}
	return true
}

// run delivers scheduled queues until stop is closed, then delivers what
// is left and switches scheduling to inline delivery.
func (c *callbacks) run(stop <-chan struct{}) {
	for {
		select {
		case <-c.wake:
		case <-stop:
			c.mu.Lock()
			c.closed = true
			c.mu.Unlock()
			c.drain()
			return
		}
		c.drain()
	}
}

// drain runs scheduled queues until none is left; a queue that is still
// running after its snapshot goes to the back of the list.
func (c *callbacks) drain() {
	for {
		c.mu.Lock()
		qs := c.queue
		c.queue, c.spare = c.spare[:0], nil
		c.mu.Unlock()
		if len(qs) == 0 {
			return
		}
		var again []*cbQueue
		for _, q := range qs {
			if c.eng.runOnce(q) {
				again = append(again, q)
			}
		}
		clear(qs)
		c.mu.Lock()
		c.queue = append(c.queue, again...)
		if c.spare == nil {
			c.spare = qs[:0]
		}
		c.mu.Unlock()
	}
}

// deliverChunk bounds how many async records have their buffer space
// released ahead of their callbacks.
const deliverChunk = 64

// deliver runs callbacks in order. Each chunk's buffer space is released
// before its callbacks run: a callback that sends again (chained produce)
// must not wait for space its own record still holds.
func (e *Engine) deliver(recs []*Pending) {
	for len(recs) > 0 {
		chunk := recs[:min(len(recs), deliverChunk)]
		recs = recs[len(chunk):]
		var failed int
		var bytes int64
		n := 0
		for _, r := range chunk {
			if r.HeldByBatch() {
				continue // released when its batch is done (notifyAll)
			}
			n++
			bytes += int64(r.Size)
			if r.Err != nil {
				failed++
			}
		}
		if n > 0 {
			e.cfg.Release(n, failed, bytes)
		}
		for _, r := range chunk {
			r.Done.Notify(r)
		}
	}
}

// Callback order across retries.
//
// Responses of one partition come back in send order, so outcomes reach
// the partition's cbQueue in send order too, except after a retry: when a
// batch that the broker applied is answered with a retriable error (or its
// answer is lost), the batches pipelined behind it are acknowledged first,
// and it only by its retry. A batch with async records that fails and will
// be sent again is therefore a blocker (PartitionQueue.blocked) until its
// own outcome is known; the async outcomes of later batches wait behind it
// in PartitionQueue.parked, in batch order, and are released once every
// earlier blocker has its outcome. Buffered records failed while batches
// sent before them are unanswered (FailBuffered: a deleted topic, say) are
// parked the same way, as an entry that also waits for those answers
// (sub -1, parkUnsentLocked). A blocker whose async records all expired
// (outcome ErrOutcomeUnknown at their deadline) no longer holds anything
// back, and a parked outcome whose own deadline passes goes out with
// everything parked before it: deadlines come before order. Sync records
// are never parked (nobody waits on their order). With nothing retried,
// blocked and parked are empty and cost two length checks.
//
// franz-go keeps the order by finishing only a partition's first batch and
// resending the later ones (pkg/kgo/sink.go, isOwnersFirstBatch); parking
// their outcomes instead costs no resend. Both lists are guarded by the
// partition's mu.

// parkedOutcome is one batch's async outcomes waiting for earlier batches,
// or (sub -1) buffered records' failures waiting for the batches drained
// before them (ord: the partition's nextOrd when they failed).
type parkedOutcome struct {
	ord      int64 // the batch's order key (Batch.before)
	sub      int   // -1: records never sent, after every batch with a lower ord
	deadline int64 // earliest delivery deadline among recs
	recs     []*Pending
}

// beforeBatch compares the parked batch's place in send order with b's.
func (o *parkedOutcome) beforeBatch(b *Batch) int {
	return comparePlace(o.ord, o.sub, b.ord, b.sub)
}

// waitsAsync reports whether some async record of b has no outcome yet.
func (b *Batch) waitsAsync() bool {
	for _, r := range b.recs {
		if r.Async && r.state.Load() == stateSending {
			return true
		}
	}
	return false
}

// blockLocked notes that b failed and will be sent again: the async
// outcomes of later batches wait until b has its own.
func (p *PartitionQueue) blockLocked(b *Batch) {
	if !b.waitsAsync() {
		return
	}
	i := 0
	for i < len(p.blocked) && p.blocked[i].before(b) < 0 {
		i++
	}
	if i < len(p.blocked) && p.blocked[i] == b {
		return
	}
	p.blocked = slices.Insert(p.blocked, i, b)
}

// completeLocked hands out the outcomes recs of batch b (all of them
// final): appended to out, or, while an earlier batch of the partition
// still waits for its outcome, the async ones parked behind it.
func (p *PartitionQueue) completeLocked(b *Batch, recs, out []*Pending) []*Pending {
	if len(p.blocked) == 0 && len(p.parked) == 0 {
		return append(out, recs...)
	}
	if i := slices.Index(p.blocked, b); i >= 0 {
		p.blocked = slices.Delete(p.blocked, i, i+1)
	}
	return p.parkAsyncLocked(b.ord, b.sub, recs, out)
}

// parkAsyncLocked parks the async outcomes among recs at place (ord, sub),
// appends the others to out (sync, or delivered already at its deadline),
// and releases what may go now.
func (p *PartitionQueue) parkAsyncLocked(ord int64, sub int, recs, out []*Pending) []*Pending {
	po := parkedOutcome{ord: ord, sub: sub}
	for _, r := range recs {
		if !r.Async || r.HeldByBatch() {
			out = append(out, r)
			continue
		}
		if po.recs == nil || r.Deadline < po.deadline {
			po.deadline = r.Deadline
		}
		po.recs = append(po.recs, r)
	}
	if po.recs != nil {
		p.parkLocked(po)
	}
	return p.releaseParkedLocked(clock.Mono(), out)
}

// parkLocked inserts po into parked in send order (after entries of the
// same place).
func (p *PartitionQueue) parkLocked(po parkedOutcome) {
	i := len(p.parked)
	for i > 0 && comparePlace(p.parked[i-1].ord, p.parked[i-1].sub, po.ord, po.sub) > 0 {
		i--
	}
	p.parked = slices.Insert(p.parked, i, po)
}

// parkUnsentLocked hands out buffered records failed now (never sent) that
// were added after every batch drained so far: appended to out, or, while
// one of those batches is unanswered or waits for its outcome, the async
// ones parked behind them.
func (p *PartitionQueue) parkUnsentLocked(recs, out []*Pending) []*Pending {
	if p.answered >= p.nextOrd-1 && len(p.blocked) == 0 && len(p.parked) == 0 {
		return append(out, recs...)
	}
	return p.parkAsyncLocked(p.nextOrd, -1, recs, out)
}

// releaseParkedLocked appends to out, in order, the parked outcomes no
// earlier blocker or unanswered batch holds back any more, and those whose
// deadline passed (with everything parked before them).
func (p *PartitionQueue) releaseParkedLocked(now int64, out []*Pending) []*Pending {
	if len(p.blocked) == 0 && len(p.parked) == 0 {
		return out
	}
	n := p.releasableParkedLocked(now)
	for i := range p.parked[:n] {
		out = append(out, p.parked[i].recs...)
	}
	p.parked = slices.Delete(p.parked, 0, n)
	return out
}

// releasableParkedLocked forgets the blockers whose async records all have
// their outcome and returns how many parked entries, from the head, may go
// now (releaseParkedLocked).
func (p *PartitionQueue) releasableParkedLocked(now int64) int {
	keep := p.blocked[:0]
	for _, b := range p.blocked {
		if b.waitsAsync() { // else: its async records expired, outcomes given
			keep = append(keep, b)
		}
	}
	clear(p.blocked[len(keep):])
	p.blocked = keep
	// Not after the first blocker: a batch refused in part (KIP-467) is
	// parked at its own place while its other records wait for a retry.
	// A parked batch was answered; parked unsent records wait for every
	// batch drained before them (answers come in send order).
	n := 0
	for n < len(p.parked) && p.parked[n].ord <= p.answered+1 &&
		(len(p.blocked) == 0 || p.parked[n].beforeBatch(p.blocked[0]) <= 0) {
		n++
	}
	for i := n; i < len(p.parked); i++ {
		if d := p.parked[i].deadline; d > 0 && due(d, now) {
			n = i + 1
		}
	}
	return n
}

// releaseAllParkedLocked appends every parked outcome to out, in order, and
// forgets the blockers (Close: nothing will be sent again).
func (p *PartitionQueue) releaseAllParkedLocked(out []*Pending) []*Pending {
	for i := range p.parked {
		out = append(out, p.parked[i].recs...)
	}
	clear(p.parked)
	clear(p.blocked)
	p.parked, p.blocked = p.parked[:0], p.blocked[:0]
	return out
}

// parkedDeadlineLocked returns the earliest deadline among parked
// outcomes, or next if that is earlier (0: none known).
func (p *PartitionQueue) parkedDeadlineLocked(next int64) int64 {
	for i := range p.parked {
		if d := p.parked[i].deadline; d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	return next
}
