package kpush_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kpush/kpush"
)

// recorder implements every Hook interface and keeps the events. It
// keeps no *Record past OnRecordDone (kpush reuses them): each record's
// events are traced by pointer while it is live, then kept by value.
type recorder struct {
	mu       sync.Mutex
	seq      int
	live     map[*kpush.Record]*recordTrace // records between OnRecordSend and OnRecordDone
	ptrs     map[*kpush.Record]bool         // every record pointer seen
	misuse   []string                       // events the pairing rules forbid
	sends    int
	buffered []kpush.RecordBufferedEvent // Record is nil: kept past OnRecordDone
	done     []doneRecord
	written  []kpush.RequestWrittenEvent
	answered []kpush.RequestAnsweredEvent
	throttle []kpush.ThrottleEvent
	opened   []kpush.ConnEvent
	closed   []kpush.ConnEvent
	failed   []kpush.ConnEvent
	bumps    []kpush.EpochBumpEvent
	auths    []kpush.AuthEvent
	retries  []kpush.RetryEvent
	// header, when set, is added by OnRecordSend.
	header string
	// event, when set, receives each event's name (non-blocking).
	event chan string
}

// recordTrace is one record's events while it is live.
type recordTrace struct {
	value string   // the record's Value at OnRecordSend
	seq   []string // event names, in order
}

// doneRecord is an OnRecordDone event, kept with its record's value and
// event names (ev.Record is nil: kpush reuses it after the hook).
type doneRecord struct {
	ev    kpush.RecordDoneEvent
	value string
	seq   []string
}

func newRecorder() *recorder {
	return &recorder{live: map[*kpush.Record]*recordTrace{}, ptrs: map[*kpush.Record]bool{}, event: make(chan string, 1<<16)}
}

// trace returns r's live trace under h.mu, noting misuse when r is not
// live or its value changed since OnRecordSend (kpush reused it early).
func (h *recorder) trace(r *kpush.Record, event string) *recordTrace {
	tr := h.live[r]
	switch {
	case tr == nil:
		h.misuse = append(h.misuse, fmt.Sprintf("%s for record %p %q, not between its send and done", event, r, r.Value))
		tr = &recordTrace{value: string(r.Value)}
	case tr.value != string(r.Value):
		h.misuse = append(h.misuse, fmt.Sprintf("%s: record %p has value %q, sent with %q", event, r, r.Value, tr.value))
	}
	tr.seq = append(tr.seq, event)
	return tr
}

// checkPairing fails t for any misuse seen.
func (h *recorder) checkPairing(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.misuse {
		t.Error(m)
	}
	if len(h.live) != 0 {
		t.Errorf("%d records have OnRecordSend and no OnRecordDone", len(h.live))
	}
}

func (h *recorder) note(name string) {
	select {
	case h.event <- name:
	default:
	}
}

func (h *recorder) OnRecordSend(ctx context.Context, r *kpush.Record) {
	if h.header != "" {
		r.Headers = append(r.Headers, kpush.Header{Key: h.header, Value: []byte("injected")})
	}
	h.mu.Lock()
	h.sends++
	h.ptrs[r] = true
	if tr := h.live[r]; tr != nil {
		h.misuse = append(h.misuse, fmt.Sprintf("send of %q with record %p still live for %q", r.Value, r, tr.value))
	}
	h.live[r] = &recordTrace{value: string(r.Value), seq: []string{"send"}}
	h.mu.Unlock()
}

// add appends ev to *events under h.mu; then, when name is set, notes it
// for waitEvent.
func add[E any](h *recorder, events *[]E, ev E, name string) {
	h.mu.Lock()
	*events = append(*events, ev)
	h.mu.Unlock()
	if name != "" {
		h.note(name)
	}
}

func (h *recorder) OnRecordBuffered(ev kpush.RecordBufferedEvent) {
	h.mu.Lock()
	h.trace(ev.Record, "buffered")
	ev.Record = nil
	h.buffered = append(h.buffered, ev)
	h.mu.Unlock()
}

func (h *recorder) OnRecordDone(ev kpush.RecordDoneEvent) {
	h.mu.Lock()
	tr := h.trace(ev.Record, "done")
	delete(h.live, ev.Record)
	ev.Record = nil
	h.done = append(h.done, doneRecord{ev: ev, value: tr.value, seq: tr.seq})
	h.mu.Unlock()
}

func (h *recorder) OnRequestWritten(ev kpush.RequestWrittenEvent)   { add(h, &h.written, ev, "") }
func (h *recorder) OnRequestAnswered(ev kpush.RequestAnsweredEvent) { add(h, &h.answered, ev, "") }
func (h *recorder) OnThrottle(ev kpush.ThrottleEvent)               { add(h, &h.throttle, ev, "") }
func (h *recorder) OnRetry(ev kpush.RetryEvent)                     { add(h, &h.retries, ev, "") }
func (h *recorder) OnConnOpened(ev kpush.ConnEvent)                 { add(h, &h.opened, ev, "opened") }
func (h *recorder) OnConnClosed(ev kpush.ConnEvent)                 { add(h, &h.closed, ev, "closed") }
func (h *recorder) OnConnFailed(ev kpush.ConnEvent)                 { add(h, &h.failed, ev, "failed") }
func (h *recorder) OnEpochBump(ev kpush.EpochBumpEvent)             { add(h, &h.bumps, ev, "bump") }
func (h *recorder) OnAuth(ev kpush.AuthEvent)                       { add(h, &h.auths, ev, "auth") }

// waitEvent waits (bounded) until an event named name arrives.
func (h *recorder) waitEvent(t *testing.T, name string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case got := <-h.event:
			if got == name {
				return
			}
		case <-deadline:
			t.Fatalf("no %s event within 20s", name)
		}
	}
}
