package sink

// Asynchronous callbacks.
//
// Ownership: every partition has a cbQueue of async outcomes waiting for
// their callbacks; its mu guards recs, spare and running. A queue with
// records is "running": it is scheduled on exactly one callback goroutine
// (a sink's callbacks.run), or being drained inline by the goroutine that
// found that goroutine closed. Only the goroutine running a queue delivers
// its records, one snapshot at a time, so one partition's callbacks run in
// order even when its leader moves: completions from the new leader join
// the same queue, behind the old leader's. callbacks.mu guards a sink's
// list of scheduled queues and closed. Lock order: cbQueue.mu and
// callbacks.mu are never held together, and neither with any other lock.

import "sync"

// cbQueue is one partition's async outcomes, in completion order.
type cbQueue struct {
	mu      sync.Mutex
	recs    []*Pending
	spare   []*Pending
	running bool // scheduled on a callback goroutine, or drained inline

	part *PartitionQueue // the queue's partition; set once at creation
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
// Records of one partition are contiguous in recs (one batch each).
func (e *Engine) pushAsync(recs []*Pending, c *callbacks) {
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
		if idle {
			e.schedule(q, c)
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
	recs := q.recs
	q.recs, q.spare = q.spare[:0], nil
	q.mu.Unlock()
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
