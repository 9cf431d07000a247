package sink

import (
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kpush/kpush/internal/clock"
)

// stackN records, for each outcome, whether Notify ran inside
// Sink.produce (with the sink's own held).
type stackN chan bool

func (c stackN) Notify(*Pending) {
	buf := make([]byte, 16<<10)
	c <- strings.Contains(string(buf[:runtime.Stack(buf, false)]), "sink.(*Sink).produce")
}

// An Inline record that expired while buffered and is found by produce's
// drain (the loop, or a Send caller writing inline: both hold own) must get
// its callback on the callback goroutine: a user's callback run under own,
// on an unrelated caller's goroutine, could block that caller and the sink.
// Only a connection reader and the reaper deliver Inline records in place.
func TestCallbacks_InlineExpiredInProduceNotUnderOwn(t *testing.T) {
	e := testEngine(false)
	s := &Sink{eng: e, Node: 1}
	s.cb.eng = e
	s.cb.wake = make(chan struct{}, 1)
	stop := make(chan struct{})
	defer close(stop)
	go s.cb.run(stop)
	p := e.NewPartitionQueue("t", 0)
	p.SetLeader(s)
	out := make(stackN, 1)
	r := newRec(out, clock.Mono()-1) // expired while buffered
	r.Async, r.Inline = true, true
	s.own.Lock() // as the loop, or a Send caller in kick, holds it
	p.Add(r)
	s.produce(true, 0)
	s.own.Unlock()
	select {
	case underOwn := <-out:
		if underOwn {
			t.Fatal("an Inline record's callback ran inside produce, under the sink's own")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the expired record got no outcome")
	}
}

// chainN is an Inline record's notifier that, while its callback runs,
// completes the next record of the same queue (as a reader finishing
// response after response would), and records where each ran.
type chainN struct {
	e      *Engine
	c      *callbacks
	recs   []*Pending
	caller string // the stack's first line (goroutine id) of runInline's caller
	order  []int
	inline []bool
	done   chan struct{}
}

func (n *chainN) Notify(r *Pending) {
	buf := make([]byte, 64)
	first := string(buf[:runtime.Stack(buf, false)])
	first = first[:strings.IndexByte(first, '[')]
	i := slices.Index(n.recs, r)
	n.order = append(n.order, i)
	n.inline = append(n.inline, first == n.caller)
	if i+1 < len(n.recs) {
		n.e.pushAsync(n.recs[i+1:i+2], n.c, true)
	} else {
		close(n.done)
	}
}

// runInline delivers at most maxInlineRounds snapshots on its caller's
// goroutine: a queue whose Inline records keep completing while it
// delivers goes to the callback goroutine, in order, each record once.
func TestCallbacks_RunInlineIsBounded(t *testing.T) {
	e := testEngine(false)
	c := &callbacks{eng: e, wake: make(chan struct{}, 1)}
	stop := make(chan struct{})
	defer close(stop)
	go c.run(stop)
	q := &cbQueue{}
	buf := make([]byte, 64)
	first := string(buf[:runtime.Stack(buf, false)])
	n := &chainN{e: e, c: c, caller: first[:strings.IndexByte(first, '[')], done: make(chan struct{})}
	const total = 5 * maxInlineRounds
	for range total {
		r := newRec(n, 0)
		r.Async, r.Inline, r.cbq = true, true, q
		n.recs = append(n.recs, r)
	}
	e.pushAsync(n.recs[:1], c, true)
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%d of %d callbacks ran", len(n.order), total)
	}
	for i, got := range n.order {
		if got != i {
			t.Fatalf("callback %d was record %d: order %v", i, got, n.order)
		}
	}
	inline := 0
	for _, in := range n.inline {
		if in {
			inline++
		}
	}
	if inline != maxInlineRounds {
		t.Fatalf("%d callbacks ran on the completing goroutine, want %d (then the callback goroutine)", inline, maxInlineRounds)
	}
}
