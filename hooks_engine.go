package kpush

// The producer's side of the hooks (hooks.go has the public interfaces):
// sorting them by kind in New, and calling them.
//
// Goroutines and ownership: hookSet is written once in New and read-only
// after, by every goroutine, without a lock. Each call below runs with no
// kpush lock held, on the goroutine its interface's doc names: the record
// hooks on the caller's (or the callback's) goroutine, the engine's on
// the sink loop and connection readers (through sink.Hooks), the
// connection and auth hooks where wire reports them (wire.Config.OnEvent),
// the epoch bump on the metadata goroutine.

import (
	"context"
	"slices"
	"time"

	"github.com/kpush/kpush/internal/clock"
	"github.com/kpush/kpush/internal/idem"
	"github.com/kpush/kpush/internal/sink"
	"github.com/kpush/kpush/internal/wire"
)

// hookSet holds the hooks by kind; built once in New and read-only after.
type hookSet struct {
	send      []HookRecordSend
	buffered  []HookRecordBuffered
	done      []HookRecordDone
	written   []HookRequestWritten
	answered  []HookRequestAnswered
	throttle  []HookThrottle
	opened    []HookConnOpened
	closed    []HookConnClosed
	failed    []HookConnFailed
	bump      []HookEpochBump
	auth      []HookAuth
	retry     []HookRetry
	anyRecord bool // send, buffered or done: the send path keeps the record and start time
}

// newHookSet sorts hooks by kind; it reports the index of a hook that
// implements no Hook… interface (-1 if none).
func newHookSet(hooks []Hook) (hookSet, int) {
	var hs hookSet
	for i, h := range hooks {
		n := 0
		if x, ok := h.(HookRecordSend); ok {
			hs.send = append(hs.send, x)
			n++
		}
		if x, ok := h.(HookRecordBuffered); ok {
			hs.buffered = append(hs.buffered, x)
			n++
		}
		if x, ok := h.(HookRecordDone); ok {
			hs.done = append(hs.done, x)
			n++
		}
		if x, ok := h.(HookRequestWritten); ok {
			hs.written = append(hs.written, x)
			n++
		}
		if x, ok := h.(HookRequestAnswered); ok {
			hs.answered = append(hs.answered, x)
			n++
		}
		if x, ok := h.(HookThrottle); ok {
			hs.throttle = append(hs.throttle, x)
			n++
		}
		if x, ok := h.(HookConnOpened); ok {
			hs.opened = append(hs.opened, x)
			n++
		}
		if x, ok := h.(HookConnClosed); ok {
			hs.closed = append(hs.closed, x)
			n++
		}
		if x, ok := h.(HookConnFailed); ok {
			hs.failed = append(hs.failed, x)
			n++
		}
		if x, ok := h.(HookEpochBump); ok {
			hs.bump = append(hs.bump, x)
			n++
		}
		if x, ok := h.(HookAuth); ok {
			hs.auth = append(hs.auth, x)
			n++
		}
		if x, ok := h.(HookRetry); ok {
			hs.retry = append(hs.retry, x)
			n++
		}
		if n == 0 {
			return hookSet{}, i
		}
	}
	hs.anyRecord = len(hs.send) > 0 || len(hs.buffered) > 0 || len(hs.done) > 0
	return hs, -1
}

// hookedCopy is the record the record hooks see and kpush sends: a copy,
// so that the caller's record does not escape (HookRecordSend). Its
// Headers are clipped, so a hook's append never writes into the caller's
// array.
//
// The record's stage times (sink.Stamps) share the copy's allocation:
// the Pending of the record points at them, so a Pending without record
// hooks carries only a nil pointer.
func hookedCopy(r *Record) (*Record, *sink.Stamps) {
	c := new(hookedAlloc)
	c.rec = *r
	c.rec.Headers = slices.Clip(c.rec.Headers)
	return &c.rec, &c.stamps
}

// hookedAlloc is hookedCopy's one allocation.
type hookedAlloc struct {
	rec    Record
	stamps sink.Stamps
}

// hookedRecord returns the record the hooks see for a Send or SendAsync.
func hookedRecord(n sink.Notifier) *Record {
	switch x := n.(type) {
	case *syncWaiter:
		return x.rec
	case *asyncRecord:
		return x.rec
	case *SendHandle:
		return x.rec
	}
	return nil
}

// hookedSend is what send reports to sendHooked for OnRecordDone.
type hookedSend struct {
	rec    *Record      // the record the hooks see (and send sends)
	size   int32        // its encoded size, 0 if it failed before it was measured
	stamps *sink.Stamps // its stage times once its outcome is taken; nil when none
	pend   *sink.Stamps // the stage times the engine fills (send sets them on the Pending)
}

// sendHooked is Send with record hooks installed (hooks.go).
func (p *Producer) sendHooked(ctx context.Context, orig *Record) (Result, error) {
	start := clock.Mono()
	var hs hookedSend
	hs.rec, hs.pend = hookedCopy(orig) // orig must not escape (Send's allocation budget)
	for _, h := range p.hooks.send {
		h.OnRecordSend(ctx, hs.rec)
	}
	res, err := p.send(ctx, hs.rec, &hs)
	p.recordDone(hs.rec, start, hs.size, hs.stamps, res, err)
	return res, err
}

// recordBuffered runs the OnRecordBuffered hooks (caller's goroutine, no
// lock held: enqueue calls it before the partition's Add).
func (p *Producer) recordBuffered(r *Record, topic string, part int32, size int) {
	ev := RecordBufferedEvent{Record: r, Topic: topic, Partition: part, Bytes: size}
	for _, h := range p.hooks.buffered {
		h.OnRecordBuffered(ev)
	}
}

// recordDone runs the OnRecordDone hooks for a record whose Send or
// SendAsync started at start (clock.Mono); called where the outcome is
// delivered, with no lock held. st is the record's stamps, nil when the
// engine may still write them (a Send that gave up) or never will.
func (p *Producer) recordDone(r *Record, start int64, size int32, st *sink.Stamps, res Result, err error) {
	now := clock.Mono()
	ev := RecordDoneEvent{Record: r, Topic: res.Topic, Partition: res.Partition, Bytes: int(size),
		Result: res, Err: err, Elapsed: time.Duration(now - start)}
	if pe, ok := err.(*ProduceError); ok {
		ev.Topic, ev.Partition = pe.Topic, pe.Partition
	}
	if st != nil && st.Answered != 0 {
		ev.Answered = true
		ev.Stages = RecordStages{Buffer: time.Duration(st.Buffered - start), Queue: time.Duration(st.Written - st.Buffered),
			InFlight: time.Duration(st.Answered - st.Written), Deliver: time.Duration(now - st.Answered)}
	}
	for _, h := range p.hooks.done {
		h.OnRecordDone(ev)
	}
}

// engineHooks returns the engine's side of the request, throttle and retry
// hooks; a function is nil when no hook of its kind is installed.
func (p *Producer) engineHooks() sink.Hooks {
	h := sink.Hooks{Stamps: len(p.hooks.done) > 0}
	if len(p.hooks.written) > 0 {
		h.Written = func(e sink.RequestEvent) {
			ev := RequestWrittenEvent{Broker: Broker{e.Node, e.Addr}, Bytes: e.Bytes, Batches: e.Batches, Records: e.Records, Err: e.Err}
			for _, x := range p.hooks.written {
				x.OnRequestWritten(ev)
			}
		}
	}
	if len(p.hooks.answered) > 0 {
		h.Answered = func(e sink.RequestEvent) {
			ev := RequestAnsweredEvent{Broker: Broker{e.Node, e.Addr}, Bytes: e.Bytes, Batches: e.Batches, Records: e.Records, Latency: e.Latency, Err: e.Err}
			for _, x := range p.hooks.answered {
				x.OnRequestAnswered(ev)
			}
		}
	}
	if len(p.hooks.throttle) > 0 {
		h.Throttle = func(node int32, addr string, d time.Duration) {
			ev := ThrottleEvent{Broker: Broker{node, addr}, Duration: d}
			for _, x := range p.hooks.throttle {
				x.OnThrottle(ev)
			}
		}
	}
	if len(p.hooks.retry) > 0 {
		h.Retry = func(topic string, part int32, n int, cause error) {
			ev := RetryEvent{Topic: topic, Partition: part, Records: n, Cause: publicCause(cause)}
			for _, x := range p.hooks.retry {
				x.OnRetry(ev)
			}
		}
	}
	return h
}

// wireEventHook returns the connections' event function, nil when no
// connection or authentication hook is installed.
func (p *Producer) wireEventHook() func(wire.Event) {
	hs := &p.hooks
	if len(hs.opened)+len(hs.closed)+len(hs.failed)+len(hs.auth) == 0 {
		return nil
	}
	mech := ""
	if p.cfg.sasl != nil {
		mech = p.cfg.sasl.Name()
	}
	return func(e wire.Event) {
		b := Broker{NodeID: e.Node, Addr: e.Addr}
		switch e.Kind {
		case wire.ConnOpened:
			for _, x := range hs.opened {
				x.OnConnOpened(ConnEvent{Broker: b})
			}
		case wire.ConnClosed:
			for _, x := range hs.closed {
				x.OnConnClosed(ConnEvent{Broker: b, Err: publicErr(e.Err)})
			}
		case wire.ConnFailed:
			for _, x := range hs.failed {
				x.OnConnFailed(ConnEvent{Broker: b, Err: publicErr(e.Err)})
			}
		case wire.Authenticated:
			for _, x := range hs.auth {
				x.OnAuth(AuthEvent{Broker: b, Mechanism: mech, Reauth: e.Reauth, Err: publicErr(e.Err)})
			}
		}
	}
}

// epochBumped runs the OnEpochBump hooks after a bump from old (metadata
// goroutine, no lock held).
func (p *Producer) epochBumped(old idem.ID) {
	cur := p.idem.Current()
	if cur == old || cur == p.bumpReported {
		return // the ID had moved on already: no new bump
	}
	p.bumpReported = cur
	ev := EpochBumpEvent{ProducerID: cur.Producer, OldEpoch: old.Epoch, Epoch: cur.Epoch, OldProducerID: old.Producer, Cause: p.eng.BumpCause()}
	for _, x := range p.hooks.bump {
		x.OnEpochBump(ev)
	}
}
