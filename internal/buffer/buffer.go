// Package buffer bounds the producer's memory: bytes and records reserved
// by buffered records, with FIFO waiting when full and waiting for empty
// (Flush).
//
// Ownership: used counters are atomics (the fast path takes no lock). mu
// guards waiters and drainers; nwait mirrors len(waiters) so that Release
// only locks when someone waits. A waiter is granted space in FIFO order by
// the releasing goroutine, one wake per waiter (no herd).
package buffer

import (
	"context"
	"sync"
	"sync/atomic"
)

type waiter struct {
	bytes int64
	ch    chan struct{} // closed when granted
}

// Limits of the packed counter: bytes in the low 40 bits, records above.
const (
	recShift = 40
	byteMask = 1<<recShift - 1
	// MaxRecords is the largest record limit a Limiter supports.
	MaxRecords = 1<<(64-recShift) - 1
	// MaxBytes is the largest byte limit a Limiter supports.
	MaxBytes = byteMask
)

// Limiter is safe for concurrent use.
type Limiter struct {
	maxBytes, maxRecs uint64

	used  atomic.Uint64 // records<<recShift | bytes: one CAS reserves both
	nwait atomic.Int32  // waiters waiting for space
	nempt atomic.Int32  // goroutines waiting for empty

	mu      sync.Mutex
	waiters []*waiter
	empty   chan struct{} // closed when records reach zero; guarded by mu
}

// New returns a limiter for at most maxBytes bytes and maxRecs records
// (clamped to MaxBytes and MaxRecords).
func New(maxBytes, maxRecs int64) *Limiter {
	return &Limiter{maxBytes: uint64(min(maxBytes, MaxBytes)), maxRecs: uint64(min(maxRecs, MaxRecords))}
}

// tryReserve reserves one record of n bytes if it fits. A record larger than
// the whole limit fits only into an empty buffer, so it cannot wait forever.
func (l *Limiter) tryReserve(n int64) bool {
	for {
		s := l.used.Load()
		r, b := s>>recShift, s&byteMask
		if r >= l.maxRecs || (b+uint64(n) > l.maxBytes && b != 0) {
			return false
		}
		if l.used.CompareAndSwap(s, s+1<<recShift+uint64(n)) {
			return true
		}
	}
}

// TryReserve reserves space for one record of n bytes without waiting.
func (l *Limiter) TryReserve(n int64) bool {
	if l.nwait.Load() > 0 {
		return false // keep FIFO order: queued waiters go first
	}
	return l.tryReserve(n)
}

// Reserve reserves space for one record of n bytes, waiting in FIFO order
// while the buffer is full, until ctx is done or stop is closed.
func (l *Limiter) Reserve(ctx context.Context, n int64, stop <-chan struct{}, stopErr error) error {
	if l.TryReserve(n) {
		return nil
	}
	l.mu.Lock()
	l.nwait.Add(1)
	if len(l.waiters) == 0 && l.tryReserve(n) {
		l.nwait.Add(-1)
		l.mu.Unlock()
		return nil
	}
	w := &waiter{bytes: n, ch: make(chan struct{})}
	l.waiters = append(l.waiters, w)
	l.mu.Unlock()

	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		return l.abandon(w, ctx.Err())
	case <-stop:
		return l.abandon(w, stopErr)
	}
}

func (l *Limiter) abandon(w *waiter, err error) error {
	l.mu.Lock()
	for i, x := range l.waiters {
		if x == w {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			l.nwait.Add(-1)
			l.mu.Unlock()
			l.releaseWake() // the next waiter may fit now
			return err
		}
	}
	l.mu.Unlock()
	// Granted concurrently: give the space back.
	l.Release(w.bytes)
	return err
}

// Release returns one record of n bytes.
func (l *Limiter) Release(n int64) { l.ReleaseN(1, n) }

// ReleaseN returns recs records of bytes bytes in all.
func (l *Limiter) ReleaseN(recs, bytes int64) {
	if recs == 0 && bytes == 0 {
		return
	}
	left := l.used.Add(^(uint64(recs)<<recShift + uint64(bytes) - 1)) >> recShift
	if l.nwait.Load() > 0 {
		l.releaseWake()
	}
	if left == 0 && l.nempt.Load() > 0 {
		l.mu.Lock()
		if l.empty != nil && l.used.Load()>>recShift == 0 {
			close(l.empty)
			l.empty = nil
		}
		l.mu.Unlock()
	}
}

// releaseWake grants space to queued waiters, in order, while it fits.
func (l *Limiter) releaseWake() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.waiters) > 0 {
		w := l.waiters[0]
		if !l.tryReserve(w.bytes) {
			return
		}
		l.waiters[0] = nil
		l.waiters = l.waiters[1:]
		l.nwait.Add(-1)
		close(w.ch)
	}
}

// Used returns the bytes and records currently reserved.
func (l *Limiter) Used() (bytes, records int64) {
	s := l.used.Load()
	return int64(s & byteMask), int64(s >> recShift)
}

// Waiting returns how many Reserve calls wait for space (a snapshot).
func (l *Limiter) Waiting() int { return int(l.nwait.Load()) }

// WaitEmpty waits until no record is reserved, or ctx is done.
func (l *Limiter) WaitEmpty(ctx context.Context) error {
	l.nempt.Add(1)
	defer l.nempt.Add(-1)
	l.mu.Lock()
	if l.used.Load()>>recShift == 0 {
		l.mu.Unlock()
		return nil
	}
	if l.empty == nil {
		l.empty = make(chan struct{})
	}
	ch := l.empty
	l.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
