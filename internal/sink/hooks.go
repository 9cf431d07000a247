package sink

// Observability hooks (the root package's Hook… interfaces): the engine's
// side. Each function is nil unless the user installed a hook of its kind,
// so a call site costs one nil check. They run with no lock held: request
// events on the goroutine that wrote the request (the sink loop, or a Send
// caller: Sink.kick) and on the connection reader (answered, throttle,
// retry). With Stamps, each request's batches get its write time (from the
// writer) and, while the reader applies the answer, its answer time, which
// finishSent copies into the records it ends.

import (
	"time"

	"github.com/kpush/kpush/internal/clock"
)

// Hooks are the engine's observability callbacks; any may be nil.
type Hooks struct {
	Written  func(RequestEvent)
	Answered func(RequestEvent)
	Throttle func(node int32, addr string, d time.Duration)
	Retry    func(topic string, partition int32, records int, cause error)
	// Stamps makes the engine fill each record's Pending.Stamps.Written
	// and Answered (the root package's RecordDoneEvent.Stages).
	Stamps bool
}

// Stamps are a record's stage times, clock.Mono nanoseconds. The root
// package sets them (Buffered, the others 0) before it queues the record,
// with record hooks only (Reset leaves them, so that the path without hooks
// does not pay for them); the engine sets Written
// and Answered (those of the request whose answer ended the record) only
// with Hooks.Stamps, in finishSent, after the record's state moved and
// before its outcome is delivered. Answered is 0 when no answer ended the
// record (failed while buffered, expired in flight, abandoned).
type Stamps struct {
	Buffered, Written, Answered int64
}

// stampWritten stamps the batches of a request about to be written
// (Hooks.Stamps), on the loop goroutine; handle reads it after the answer.
func stampWritten(batches []*Batch) {
	now := clock.Mono()
	for _, b := range batches {
		b.written = now
	}
}

// RequestEvent describes one ProduceRequest.
type RequestEvent struct {
	Node    int32
	Addr    string
	Bytes   int // the batches' encoded bytes
	Batches int
	Records int
	Latency time.Duration // Answered only
	Err     error
	start   int64 // clock.Mono just before the write
}

// requestEvent describes a request of batches (all encoded); nil when no
// request hook is installed.
func (s *Sink) requestEvent(batches []*Batch) *RequestEvent {
	h := &s.eng.cfg.Hooks
	if h.Written == nil && h.Answered == nil {
		return nil
	}
	ev := &RequestEvent{Node: s.Node, Addr: s.Addr(), Batches: len(batches)}
	for _, b := range batches {
		ev.Bytes += len(b.bytes)
		ev.Records += len(b.recs)
	}
	ev.start = clock.Mono()
	return ev
}

// written reports a request written (err nil) or not written.
func (s *Sink) written(ev *RequestEvent, err error) {
	if ev == nil || s.eng.cfg.Hooks.Written == nil {
		return
	}
	e := *ev
	e.Err = err
	s.eng.cfg.Hooks.Written(e)
}

// answered reports a request's end, before its batches are handled.
func (s *Sink) answered(ev *RequestEvent, err error) {
	if ev == nil || s.eng.cfg.Hooks.Answered == nil {
		return
	}
	e := *ev
	e.Latency = time.Duration(clock.Mono() - ev.start)
	e.Err = err
	s.eng.cfg.Hooks.Answered(e)
}

// BumpCause returns the broker error behind the latest epoch bump a
// partition asked for (nil if none did).
func (e *Engine) BumpCause() error {
	if c := e.bumpCause.Load(); c != nil {
		return *c
	}
	return nil
}
