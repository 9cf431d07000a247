package sink

import (
	"strings"
	"sync/atomic"

	"github.com/kpush/kpush/internal/batch"
)

// Record states. A record moves Buffered → Sending → Done, or leaves
// Buffered for Canceled (its waiter gave up before it was sent) or Done
// (failed while buffered). A waiter that gives up while its record is being
// sent moves it Sending → Abandoned; the outcome is then delivered to nobody.
// A record still in a batch (in flight or waiting for a retry) when its
// delivery deadline passes moves Sending → Expired: the reaper delivers
// ErrOutcomeUnknown (cause ErrDeliveryTimeout) at once, and the batch keeps
// the record — its bytes stay reserved and its Pending must not be reused —
// until the batch's own outcome arrives, which is then dropped.
const (
	stateBuffered uint32 = iota
	stateSending
	stateCanceled
	stateDone
	stateAbandoned
	stateExpired
)

// Notifier receives a record's outcome. Notify is called exactly once per
// record that was not canceled, never under a kpush lock; for an abandoned
// record nobody waits for the outcome, but Notify still runs so the owner
// can release what the record holds.
type Notifier interface {
	Notify(p *Pending)
}

// HeldReleaser is implemented by a Notifier that reuses its records: the
// engine calls ReleaseHeld once the batch that held a record whose outcome
// was delivered early (HeldByBatch) is done with it, without a kpush lock
// held, possibly before that outcome's Notify has run (async). The owner
// may reuse the Pending once both have happened.
type HeldReleaser interface {
	ReleaseHeld(p *Pending)
}

// Pending is one record on its way to the broker. The root package embeds
// it in its waiter types so that a record costs one allocation (or none,
// when waiters are pooled).
//
// Field order is cache layout: a batch's drain reads state, Size and
// Deadline, and its encoding the record right after; with those first, the
// drain reads one cache line of a record and the encoding one more, the
// adjacent one (CPUs fetch 128-byte-aligned pairs of lines together), when
// the owner embeds Pending at such a boundary (asyncRecord in its slab).
type Pending struct {
	state    atomic.Uint32
	Size     int32 // bytes reserved in the producer's buffer
	Deadline int64 // clock.Mono nanoseconds; delivery timeout
	Rec      batch.Record

	Topic     string
	Partition int32
	Async     bool // Notify runs on the sink's callback goroutine
	// Inline (with Async): Add kicks the sink as a Send's record does — the
	// sender writes the request itself when the sink is idle — and Notify,
	// which its owner promises is quick and never blocks, runs on the
	// goroutine that completes the record (the connection reader) when no
	// callback of its partition is pending (startQueues, runInline). Set by
	// kpush.TrySendCancelable before Add.
	Inline   bool
	OwnRead  bool  // a Send whose ctx has no Done channel: it may read its own response (Sink.kick)
	Unknown  bool  // outcome: the record may have been written (ErrOutcomeUnknown)
	Enqueued int64 // clock.Mono nanoseconds; when Send buffered it (linger)
	Done     Notifier
	Stamps   *Stamps // stage times, with record hooks only (hooks.go); kpush's copy of the record holds them

	cbq *cbQueue // the partition's callback queue; set by Partition.Add

	// Outcome, written before Notify (and Unknown above).
	Offset int64
	Err    error
}

// Reset prepares p for reuse: the outcome and state are cleared; the
// caller sets every input field before Add.
func (p *Pending) Reset() {
	p.state.Store(stateBuffered)
	p.Offset, p.Err, p.Unknown = -1, nil, false
}

// TryCancel marks a buffered record canceled. It reports false when the
// record is already being sent or done.
func (p *Pending) TryCancel() bool { return p.state.CompareAndSwap(stateBuffered, stateCanceled) }

// TryAbandon marks a record that is being sent as abandoned: its waiter
// stops waiting and its outcome will be dropped. It reports false when the
// outcome was already delivered (the waiter must then take it). On true,
// the caller's key, value and headers are no longer referenced: the batch
// that may still encode the record uses a copy (own).
func (p *Pending) TryAbandon() bool {
	if p.cbq != nil {
		mu := &p.cbq.part.recMu
		mu.Lock()
		defer mu.Unlock()
	}
	if !p.state.CompareAndSwap(stateSending, stateAbandoned) {
		return false
	}
	p.own()
	return true
}

// own replaces the record's key, value and headers with copies in one
// kpush-owned allocation, so that a batch can still encode the record (a
// retry after a split or a KIP-467 partial failure) after its outcome was
// given to the caller, who may then reuse that memory. The partition's
// recMu must be held: the sink's encoder reads these fields under it. Only
// records whose outcome is given while a batch holds them pay for this.
func (p *Pending) own() {
	r := &p.Rec
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Value)
	}
	buf := make([]byte, 0, n)
	clone := func(b []byte) []byte {
		if b == nil {
			return nil // null stays null; empty stays empty
		}
		buf = append(buf, b...)
		c := buf[len(buf)-len(b):]
		return c[:len(c):len(c)]
	}
	r.Key, r.Value = clone(r.Key), clone(r.Value)
	if r.Headers != nil {
		hs := make([]batch.Header, len(r.Headers))
		for i, h := range r.Headers {
			hs[i] = batch.Header{Key: strings.Clone(h.Key), Value: clone(h.Value)}
		}
		r.Headers = hs
	}
}

// claim moves a buffered record to Sending; false when it was canceled or
// failed meanwhile.
func (p *Pending) claim() bool { return p.state.CompareAndSwap(stateBuffered, stateSending) }

// FailBuffered fails a record that was never sent; it reports whether the
// caller now owns the notification.
func (p *Pending) FailBuffered(err error) bool {
	if !p.state.CompareAndSwap(stateBuffered, stateDone) {
		return false
	}
	p.Err, p.Unknown = err, false
	return true
}

// finishSent records the outcome of a sent record of batch b and reports
// whether someone is still waiting for it (false when abandoned or
// expired). The outcome is written only after the state moved: an expired
// record's outcome was already delivered and may be being read.
func (p *Pending) finishSent(b *Batch, offset int64, err error, unknown bool) bool {
	if !p.state.CompareAndSwap(stateSending, stateDone) {
		return false
	}
	p.Offset, p.Err, p.Unknown = offset, err, unknown
	if b.answered != 0 && p.Stamps != nil { // Hooks.Stamps, while handle applies b's answer
		p.Stamps.Written, p.Stamps.Answered = b.written, b.answered
	}
	return true
}

// expireSent ends a record whose delivery deadline passed while its batch
// was in flight or waiting for a retry: outcome unknown with cause err. It
// reports whether the caller now owns the notification. The partition's
// recMu must be held: the record is copied (own) before its outcome goes
// out.
func (p *Pending) expireSent(err error) bool {
	if !p.state.CompareAndSwap(stateSending, stateExpired) {
		return false
	}
	p.own()
	p.Offset, p.Err, p.Unknown = -1, err, true
	return true
}

// HeldByBatch reports whether the record's outcome was delivered at its
// delivery deadline while a batch still refers to it: its owner must not
// reuse the Pending (the engine lets go of it when the batch is done).
func (p *Pending) HeldByBatch() bool { return p.state.Load() == stateExpired }
