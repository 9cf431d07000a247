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

// hookedRec is kpush's copy of a record, the one the record hooks see
// and kpush sends (HookRecordSend), with the record's stage times
// (sink.Stamps: the record's Pending points at them) and its start time.
// It lives in a structure the send has anyway, allocated with it once and
// reused after the record's OnRecordDone: a pooled syncWaiter (Send), an
// asyncRecord's slab (SendAsync), the SendHandle (SendCancelable). So the
// caller's record does not escape, and record hooks allocate nothing per
// record.
//
// Ownership: the send that fills it (begin) until its OnRecordDone hooks
// return (end); the engine only ever writes stamps, and only while the
// record is in a batch, which its owner (syncWaiter, asyncRecord) waits
// for before reusing it.
type hookedRec struct {
	rec    Record
	stamps sink.Stamps
	start  int64 // clock.Mono at the start of Send or SendAsync
}

// begin fills h from the caller's record r and returns the record the
// hooks see. Its Headers are clipped, so a hook's append never writes
// into the caller's array.
func (h *hookedRec) begin(r *Record) *Record {
	h.start = clock.Mono()
	h.rec = *r
	h.rec.Headers = slices.Clip(h.rec.Headers)
	return &h.rec
}

// hookedRecord returns the record the hooks see for a Send or SendAsync
// (with record hooks, every send enqueue buffers has one).
func hookedRecord(n sink.Notifier) *Record {
	switch x := n.(type) {
	case *syncWaiter:
		return &x.hk.rec
	case *asyncRecord:
		return &x.hk.rec
	case *SendHandle:
		return &x.hk.rec
	}
	return nil
}

// hookedWaiter is a syncWaiter of a producer with record hooks: its copy
// of the record comes in the same allocation, so that a producer without
// them does not pay for it.
type hookedWaiter struct {
	w  syncWaiter
	hk hookedRec
}

// newWaiter returns a syncWaiter for the pool.
func (p *Producer) newWaiter() *syncWaiter {
	if p.hooks.anyRecord {
		hw := &hookedWaiter{}
		hw.w.hk = &hw.hk
		hw.w.ch, hw.w.prod = make(chan struct{}, 1), p
		return &hw.w
	}
	return &syncWaiter{ch: make(chan struct{}, 1), prod: p}
}

// sendHooked is Send with record hooks installed (hooks.go): the waiter's
// copy of orig goes to the hooks and to send.
func (p *Producer) sendHooked(ctx context.Context, orig *Record) (Result, error) {
	w, _ := p.waiters.Get().(*syncWaiter)
	if w == nil {
		w = p.newWaiter()
	}
	r := w.hk.begin(orig) // orig must not escape (Send's allocation budget)
	for _, h := range p.hooks.send {
		h.OnRecordSend(ctx, r)
	}
	return p.send(ctx, r, w)
}

// recordBuffered runs the OnRecordBuffered hooks (caller's goroutine, no
// lock held: enqueue calls it before the partition's Add).
func (p *Producer) recordBuffered(r *Record, topic string, part int32, size int) {
	ev := RecordBufferedEvent{Record: r, Topic: topic, Partition: part, Bytes: size}
	for _, h := range p.hooks.buffered {
		h.OnRecordBuffered(ev)
	}
}

// recordDone runs the OnRecordDone hooks for the record h holds; called
// where the outcome is delivered, with no lock held. st is the record's
// stamps, nil when the engine may still write them (a Send that gave up)
// or never will. After the hooks, h drops the caller's memory (its owner
// may reuse it for another record from then on).
func (p *Producer) recordDone(h *hookedRec, size int32, st *sink.Stamps, res Result, err error) {
	now := clock.Mono()
	start := h.start
	ev := RecordDoneEvent{Record: &h.rec, Topic: res.Topic, Partition: res.Partition, Bytes: int(size),
		Result: res, Err: err, Elapsed: time.Duration(now - start)}
	if pe, ok := err.(*ProduceError); ok {
		ev.Topic, ev.Partition = pe.Topic, pe.Partition
	}
	if st != nil && st.Answered != 0 {
		ev.Answered = true
		ev.Stages = RecordStages{Buffer: time.Duration(st.Buffered - start), Queue: time.Duration(st.Written - st.Buffered),
			InFlight: time.Duration(st.Answered - st.Written), Deliver: time.Duration(now - st.Answered)}
	}
	for _, x := range p.hooks.done {
		x.OnRecordDone(ev)
	}
	h.rec = Record{} // the caller may reuse its key, value and headers: keep none alive
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
