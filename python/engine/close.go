package main

// Flush and close of a bridge producer. Ownership: flushAsync and
// closeAsync run on the calling (event loop's) thread and start one
// goroutine per call that waits and pushes the completion; flush and close
// run on the calling thread, which waits with the GIL released. Locks as in
// bridge.go's header (none nests another).

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/internal/buffer"
)

// waitIdle waits until no record is outstanding (every outcome pushed).
func (b *bridge) waitIdle(ctx context.Context) error {
	b.zmu.Lock()
	if b.outstanding.Load() == 0 {
		b.zmu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	b.zeroWaiters = append(b.zeroWaiters, ch)
	b.zmu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func timeoutCtx(timeoutMS int64) (context.Context, context.CancelFunc) {
	if timeoutMS < 0 {
		return context.WithCancel(context.Background())
	}
	return context.WithTimeout(context.Background(), time.Duration(timeoutMS)*time.Millisecond)
}

// seal starts a flush: it returns the generations of every record
// accepted so far (records accepted later join a new one), or ErrClosed.
func (b *bridge) seal() (buffer.Barrier, error) {
	if b.closed.Load() {
		return nil, kpush.ErrClosed
	}
	return b.undelivered.Seal(), nil
}

// flushAsync starts a flush whose completion (kind flush, id) follows the
// outcomes it waits for (kp_flush_async). Sealed here, on the loop's
// thread: the records of kp_send_many calls made after it returns are not
// part of it. With nothing to wait for, the completion is queued before it
// returns, on the loop's thread, which then finds the wake-up in its own
// next select: a goroutine would cost a wake-up of another thread first,
// then the pipe's wake-up of the loop's (most of an empty flush's ~90 µs
// at C=1, python/docs/internals.md, "Fifth round").
func (b *bridge) flushAsync(id uint64, timeoutMS int64) {
	barrier, err := b.seal()
	if err != nil || barrier.Done() {
		// Not b.flush: with a zero timeout its context is done at once,
		// and Barrier.Wait's select could pick it over the closed
		// generations (deadline_exceeded for a flush with nothing to wait
		// for, half the time).
		b.q.push(done(id, kindFlush, err))
		return
	}
	go func() {
		b.q.push(done(id, kindFlush, b.flush(barrier, err, timeoutMS)))
	}()
}

// flush waits for the records of barrier (from seal) to have their
// outcomes pushed; records sent after the seal are not waited for.
func (b *bridge) flush(barrier buffer.Barrier, err error, timeoutMS int64) error {
	if err != nil {
		return err
	}
	ctx, cancel := timeoutCtx(timeoutMS)
	defer cancel()
	return barrier.Wait(ctx)
}

// close stops intake, closes the engine producers (bounded by the
// timeout; what is left fails) and waits for every outcome to be pushed.
func (b *bridge) close(timeoutMS int64) error {
	lanes, err := b.stopIntake()
	if err != nil {
		return err
	}
	return b.finishClose(lanes, timeoutMS)
}

// closeAsync is kp_close_async: the "already closed" check and the end of
// intake happen here, on the caller's thread, so of two closes the first
// called is the real one (whichever goroutine runs first); its completion
// (kind close, id) arrives after every record's outcome, the other's at
// once with ErrClosed.
func (b *bridge) closeAsync(id uint64, timeoutMS int64) {
	lanes, err := b.stopIntake()
	go func() {
		if err == nil {
			err = b.finishClose(lanes, timeoutMS)
		}
		b.q.push(done(id, kindClose, err))
	}()
}

// stopIntake is the start of close: ErrClosed if a close already began,
// else intake is stopped and the lanes to wait for are returned.
func (b *bridge) stopIntake() ([]*lane, error) {
	if !b.closed.CompareAndSwap(false, true) {
		return nil, kpush.ErrClosed
	}
	b.imu.Lock()
	b.intakeClosed = true
	lanes := slices.Collect(maps.Values(b.lanes)) // no lane starts from now on
	b.imu.Unlock()
	return lanes, nil
}

// finishClose is the rest of close, after stopIntake.
func (b *bridge) finishClose(lanes []*lane, timeoutMS int64) error {
	for _, l := range lanes {
		l.poke()
	}
	stopped := make(chan struct{})
	go func() {
		b.lanesWG.Wait()
		close(stopped)
	}()
	ctx, cancel := timeoutCtx(timeoutMS)
	defer cancel()
	select {
	case <-stopped:
	case <-ctx.Done():
		// Intake may be blocked on a full buffer (until a record's delivery
		// timeout): interrupt it and fail what it still holds.
		b.aborted.Store(true)
		b.cmu.Lock()
		for _, l := range lanes {
			l.icancel()
		}
		b.cmu.Unlock()
		<-stopped
	}
	err := b.p.Close(ctx)
	b.mmu.Lock()
	m := b.manual
	b.mmu.Unlock()
	if m != nil {
		if err2 := m.Close(ctx); err == nil {
			err = err2
		}
	}
	// Close delivered every outcome (their callbacks pushed them).
	b.waitIdle(context.Background())
	b.tmu.Lock()
	for id, ch := range b.tokens {
		ch <- tokenReply{err: kpush.ErrClosed}
		delete(b.tokens, id)
	}
	b.tmu.Unlock()
	return err
}
