package kpush

// Goroutines and ownership (SendCancelable, TrySendCancelable):
//   - The caller's goroutine runs SendCancelable (enqueue, as SendAsync),
//     or TrySendCancelable (enqueue without waiting; it may also write the
//     request, holding the sink's own, as Send's caller does).
//   - The outcome arrives through SendHandle.Notify on the partition's
//     callback goroutine (a sink's), in send order per partition, as for
//     SendAsync; a TrySendCancelable record's Notify may instead run on the
//     goroutine that completed it (sink.Pending.Inline), still in order —
//     only a connection's reader or the reaper, never a sink loop or a
//     Send caller writing inline (they hold the sink's own: startQueues).
//   - Any goroutine may call SendHandle.Cancel, at any time, any number of
//     times.
// h.mu guards delivered and canceled: exactly one of Notify and Cancel
// delivers the outcome. Lock order: h.mu before the partition's lock
// (Cancel withdraws under h.mu); Notify never runs under a kpush lock, so
// it may take h.mu.

import (
	"context"
	"errors"
	"sync"

	"github.com/kpush/kpush/internal/buffer"
	"github.com/kpush/kpush/internal/partitioner"
	"github.com/kpush/kpush/internal/sink"
)

// SendHandle is a record sent with SendCancelable; its Cancel withdraws the
// record or drops its outcome. It is safe for concurrent use.
type SendHandle struct {
	pend sink.Pending
	cb   func(Result, error)
	prod *Producer
	gen  *buffer.Gen          // the record's Flush generation
	part *sink.PartitionQueue // where enqueue buffered the record (set before Add)
	load *partitioner.Counter // its partition's load (partitioner.go); under mu after enqueue
	// With record hooks only: kpush's copy of the record, allocated with
	// the handle (hooks_engine.go); nil without record hooks, and once
	// its OnRecordDone ran or is running. Under mu after enqueue.
	hk *hookedRec

	mu        sync.Mutex
	delivered bool // cb ran (or is running) with the engine's outcome
	canceled  bool // Cancel delivered the outcome
}

// SendCancelable produces one record without waiting, like SendAsync, and
// returns a handle whose Cancel gives the record Send's cancellation
// semantics without a goroutine blocked per record: cb (which may be nil)
// receives exactly one outcome, either the engine's or the cancellation's.
//
// ctx bounds only the wait for buffer space and first metadata (as for
// SendAsync). Callbacks run as SendAsync's do: one at a time per partition,
// in send order, on a sink's goroutine; records that fail before being
// buffered have cb run on the calling goroutine before SendCancelable
// returns (Cancel is then a no-op). A callback must not call Flush or
// Close.
func (p *Producer) SendCancelable(ctx context.Context, r *Record, cb func(Result, error)) *SendHandle {
	mono, wall := p.clock.Now() // the deadline counts from here (enqueue)
	var h *SendHandle
	rec := r
	if p.hooks.anyRecord && r != nil {
		hh := &struct { // one allocation for the handle and the hooks' copy
			h  SendHandle
			hk hookedRec
		}{}
		h = &hh.h
		h.hk = &hh.hk
		hr := hh.hk.begin(r) // r itself must not escape: hooks see hr
		h.pend.Stamps = &hh.hk.stamps
		for _, x := range p.hooks.send {
			x.OnRecordSend(ctx, hr)
		}
		rec = hr
	} else {
		h = &SendHandle{}
	}
	h.cb, h.prod = cb, p
	h.pend.Reset()
	h.pend.Async = true
	if err := p.enqueue(ctx, rec, &h.pend, h, &h.gen, mono, wall, false); err != nil {
		h.delivered = true
		hk := h.hk
		h.hk = nil
		p.failUnbuffered(hk, h.pend.Size, cb, err)
		return h
	}
	return h
}

// errWouldWait is enqueue's answer, with try set, when buffering the record
// would wait (for its topic's first metadata or for buffer space); nothing
// was taken. Never returned to callers of the public API.
var errWouldWait = errors.New("kpush: buffering the record would wait")

// TrySendCancelable is SendCancelable for a caller that must never wait,
// such as a thread running an event loop (the Python bridge hands a lone
// record over this way, on the loop's thread). It reports false, having done
// nothing (cb is not called), when buffering the record would wait: its
// topic's metadata is not known yet (the lookup is started), or buffer space
// is short (without WithFailFastWhenFull); send it with SendCancelable
// then, from a goroutine that may wait. It also reports false whenever
// record hooks are installed (WithHooks), so they see each record once.
//
// Otherwise it behaves as SendCancelable, with two differences. When the
// record's broker has nothing in flight and its connection is up, the
// request is written on the calling goroutine, as Send's is (a write of at
// most 64 KiB into an idle connection: it does not wait for the broker),
// instead of waking the sink's goroutine. And cb runs on the goroutine that
// completes the record when no earlier callback of the partition is
// pending: the one reading the broker's responses, or the producer's
// reaper (delivery timeout); else on a sink's callback goroutine, still one
// at a time per partition, in send order (and on Cancel's goroutine when
// Cancel delivers). cb must therefore be quick and must never block: it
// must not call Flush or Close, nor Send, SendCancelable or SendAsync where
// they may wait (for metadata or buffer space) — a blocked reader stops
// every response from its broker. Bad input still fails through cb on the
// calling goroutine, with true.
//
// Experimental: for the Python bridge; may change (it exposes which
// goroutine runs callbacks).
func (p *Producer) TrySendCancelable(r *Record, cb func(Result, error)) (*SendHandle, bool) {
	if p.hooks.anyRecord {
		return nil, false
	}
	h := &SendHandle{cb: cb, prod: p}
	h.pend.Reset()
	h.pend.Async = true
	h.pend.Inline = true
	mono, wall := p.clock.Now() // the deadline counts from here (enqueue)
	switch err := p.enqueue(context.Background(), r, &h.pend, h, &h.gen, mono, wall, true); {
	case err == errWouldWait:
		return nil, false
	case err != nil:
		h.delivered = true
		p.failUnbuffered(nil, 0, cb, err)
	}
	return h, true
}

// Cancel gives up on the record as a cancelled Send's ctx does: a record not
// yet sent is withdrawn (never written) and its callback receives a
// *ProduceError matching ErrNotWritten and context.Canceled; a record in
// flight has its callback run at once with a *ProduceError matching
// ErrOutcomeUnknown and context.Canceled, and its eventual outcome is
// dropped. If the outcome is being delivered already, Cancel does nothing
// and the callback receives that outcome. The callback runs on Cancel's
// goroutine when Cancel delivers. Cancel never blocks on the network.
func (h *SendHandle) Cancel() {
	h.mu.Lock()
	if h.delivered || h.canceled {
		h.mu.Unlock()
		return
	}
	pd := &h.pend
	var err error
	switch {
	case h.part != nil && h.part.Cancel(pd):
		// Never sent: Notify will not run; the partition releases the
		// record's buffer space when it drops it.
		h.prod.failed.Add(1)
		takeLoad(&h.load, pd.Size)
		h.gen.Done()
		err = notWritten(pd.Topic, pd.Partition, context.Canceled)
	case pd.TryAbandon():
		// In flight: Notify still runs (to let go of the record, and its
		// load, which counts until its batch is done, as an abandoned
		// Send's) but delivers nothing.
		err = &ProduceError{Topic: pd.Topic, Partition: pd.Partition, Unknown: true, Err: context.Canceled}
	default:
		// The outcome is set: Notify delivers it.
		h.mu.Unlock()
		return
	}
	h.canceled = true
	cb, hk := h.cb, h.hk
	h.cb, h.hk = nil, nil
	h.mu.Unlock()
	if hk != nil {
		h.prod.recordDone(hk, pd.Size, nil, Result{}, err)
	}
	if cb != nil {
		cb(Result{}, err)
	}
}

// Notify implements sink.Notifier; it runs on the goroutine that delivers
// the record's callbacks.
func (h *SendHandle) Notify(pd *sink.Pending) {
	h.mu.Lock()
	cb := h.cb
	deliver := !h.canceled
	if deliver {
		h.delivered = true
	}
	takeLoad(&h.load, pd.Size)
	hk := h.hk
	h.cb, h.hk = nil, nil
	h.mu.Unlock()
	if deliver && (cb != nil || hk != nil) {
		res, err := h.prod.outcome(pd)
		if hk != nil {
			h.prod.recordDone(hk, pd.Size, pd.Stamps, res, err)
		}
		if cb != nil {
			cb(res, err)
		}
	}
	h.gen.Done() // after the callback: Flush waits for callbacks
}
