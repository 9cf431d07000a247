package buffer

// Flush tracking: records without a delivered outcome, counted by
// generation, so that Flush waits for the records accepted before it and
// not for those sent while it waits (the Java producer's flush()
// semantics). Under steady load the total never reaches zero; each
// generation does, once sealed.
//
// Ownership: Tracker.cur is an atomic pointer written only under
// Tracker.mu (by Wait); mu also guards sealed. A Gen's counter is an
// atomic; its done channel is closed exactly once, by whichever goroutine
// moves the counter to sealedBit (the last Done after sealing, or the
// sealing Wait when nothing was left). Add and Done take no lock. Nothing
// nests with the Limiter's locks.

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
)

// sealedBit marks a generation no record may join any more.
const sealedBit = 1 << 62

// Gen is one generation of tracked records. Safe for concurrent use.
type Gen struct {
	n    atomic.Int64  // records without an outcome, | sealedBit once sealed
	done chan struct{} // closed when sealed and n reached zero
}

func newGen() *Gen { return &Gen{done: make(chan struct{})} }

// Done counts one record of g as delivered. Each record accepted by Add
// calls it exactly once.
func (g *Gen) Done() {
	if g.n.Add(-1) == sealedBit {
		close(g.done)
	}
}

// Tracker counts records without a delivered outcome. The zero value is
// not ready; use NewTracker. Safe for concurrent use.
type Tracker struct {
	cur    atomic.Pointer[Gen] // the generation new records join
	mu     sync.Mutex          // guards sealed and writes of cur
	sealed []*Gen              // sealed generations whose done may be open
}

// NewTracker returns an empty tracker.
func NewTracker() *Tracker {
	t := &Tracker{}
	t.cur.Store(newGen())
	return t
}

// Add counts one accepted record and returns its generation, on which the
// record's Done must be called once its outcome is delivered. Lock-free.
func (t *Tracker) Add() *Gen {
	for {
		g := t.cur.Load()
		v := g.n.Load()
		if v&sealedBit != 0 {
			// Wait replaced cur before sealing g: reload.
			continue
		}
		if g.n.CompareAndSwap(v, v+1) {
			return g
		}
	}
}

// Barrier is what one Flush waits for: the generations sealed so far.
type Barrier []*Gen

// Seal closes the current generation to new records (later Adds join a
// fresh one) and returns every generation added before the call whose
// records are not all Done yet.
func (t *Tracker) Seal() Barrier {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.cur.Load()
	t.cur.Store(newGen())
	if old.n.Add(sealedBit) == sealedBit {
		close(old.done) // nothing was left
	}
	// Earlier Seals' generations hold records added before this call too.
	t.sealed = slices.DeleteFunc(t.sealed, func(g *Gen) bool { return isClosed(g.done) })
	t.sealed = append(t.sealed, old)
	return slices.Clone(t.sealed)
}

// Done reports whether every record of b's generations has been counted
// Done already (then Wait returns nil at once).
func (b Barrier) Done() bool {
	for _, g := range b {
		if !isClosed(g.done) {
			return false
		}
	}
	return true
}

// Wait waits until every record of b's generations has been counted Done,
// or ctx is done (returning ctx's error). A generation already done counts
// as done even if ctx is done too: with nothing outstanding Wait returns
// nil, not ctx's error at random (select picks among ready cases at random).
func (b Barrier) Wait(ctx context.Context) error {
	for _, g := range b {
		if isClosed(g.done) {
			continue
		}
		select {
		case <-g.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Wait waits until every record added before the call has been counted
// Done, or ctx is done (returning ctx's error). Records added while it
// waits are not waited for.
func (t *Tracker) Wait(ctx context.Context) error { return t.Seal().Wait(ctx) }

// Pending returns how many tracked records have no delivered outcome yet
// (a snapshot; concurrent Adds and Dones may change it at once).
func (t *Tracker) Pending() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.cur.Load().n.Load() &^ sealedBit
	for _, g := range t.sealed {
		n += g.n.Load() &^ sealedBit
	}
	return n
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
