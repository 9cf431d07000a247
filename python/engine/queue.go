package main

// Goroutines and ownership (completion queue):
//   - Any engine goroutine (SendAsync callbacks, Send goroutines, flush and
//     close goroutines) calls push; the Python event loop thread calls drain
//     through kp_drain. q.mu guards items and armed.
//   - The pipe's write end is written only by push, and only when the queue
//     goes from empty to non-empty (armed false → true); drain sets armed
//     back to false when it empties the queue. The read end belongs to the
//     Python side (add_reader), which reads the pipe before draining so a
//     wake-up is never lost.
//   - kp_free closes the pipe (close, under q.fdmu, which guards closed); a
//     push after it is dropped, never written to the closed fd. The wake-up
//     byte is written under q.fdmu held for reading, not under q.mu: the
//     loop thread, woken by that very byte, calls kp_drain at once, and
//     with the write under q.mu it found the lock still held by the pusher
//     and parked (7 % of records at C=1, a sleep and a wake-up each).

import (
	"sync"
	"syscall"
)

// completion is one outcome waiting to be drained by Python.
type completion struct {
	id        uint64
	offset    int64
	timestamp int64
	partition int32
	kind      int32
	cause     int32
	code      int32
	msg       string
}

// Completion kinds, shared with kpush/_ffi.py.
const (
	kindOK         = 0
	kindNotWritten = 1
	kindUnknown    = 2
	kindFlush      = 3
	kindClose      = 4
	kindPartitions = 5
	kindToken      = 6
)

// queue is the completion queue of one bridge producer.
type queue struct {
	rfd, wfd int

	mu    sync.Mutex
	items []completion
	spare []completion
	armed bool

	fdmu   sync.RWMutex
	closed bool // the pipe is closed: its fd numbers may belong to another file now
}

func newQueue() (*queue, error) {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		return nil, err
	}
	return &queue{rfd: fds[0], wfd: fds[1]}, nil
}

// push appends c and wakes the loop if the queue was empty.
// After close it drops c: nobody drains the queue any more, and a late
// push (a flush or partitions_for finishing after close) must not write to
// a closed fd whose number the process may have reused for another file.
// The write is under fdmu (read) so close cannot come between the check
// and it; it happens once per arming (empty → non-empty) and never blocks
// (O_NONBLOCK). It comes after q.mu is released, so a drain between
// arming and the write takes c already and disarms, and the next push
// arms and writes too: up to two bytes for one drain. The extra byte only
// causes a spurious wake-up (the reader reads the pipe, drains nothing or
// only newer completions), never a lost one: a push that finds the queue
// disarmed always writes.
func (q *queue) push(c completion) {
	q.fdmu.RLock()
	defer q.fdmu.RUnlock()
	if q.closed {
		return
	}
	id := c.id
	if stageOn {
		stamp(id, stQueued, monoNow())
	}
	q.mu.Lock()
	q.items = append(q.items, c)
	wake := !q.armed
	q.armed = true
	q.mu.Unlock()
	if wake {
		// A full pipe already holds a wake-up; EAGAIN is fine.
		syscall.Write(q.wfd, []byte{1})
	}
	if stageOn {
		stamp(id, stPipe, monoNow())
	}
}

// take removes up to max completions whose messages fit in msgCap bytes
// (at least one is always taken, its message truncated if needed).
func (q *queue) take(max int, msgCap int, fn func(i int, c *completion)) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n, used := 0, 0
	for n < len(q.items) && n < max {
		c := &q.items[n]
		if n > 0 && used+len(c.msg) > msgCap {
			break
		}
		fn(n, c)
		used += len(c.msg)
		n++
	}
	if n == len(q.items) {
		clear(q.items)
		q.items = q.items[:0]
		q.armed = false
	} else {
		rest := copy(q.items, q.items[n:])
		clear(q.items[rest:])
		q.items = q.items[:rest]
	}
	return n
}

// close closes the pipe (kp_free); later pushes are dropped.
func (q *queue) close() {
	q.fdmu.Lock()
	defer q.fdmu.Unlock()
	if q.closed {
		return
	}
	q.closed = true
	syscall.Close(q.rfd)
	syscall.Close(q.wfd)
}
