package sink

import (
	"testing"
	"time"

	"github.com/kpush/kpush/internal/clock"
)

// Starting the callback queues a response made running (startQueues,
// after queueAsync under the partition lock): on a connection reader an
// all-Inline queue still runs there (the C=1 fast path: no hand-off to the
// callback goroutine), elsewhere it goes to the callback goroutine, and a
// queue that is running already — scheduled on another sink's callback
// goroutine — is not started a second time: its records wait behind the
// earlier ones, on that goroutine.

func inlineRec(p *PartitionQueue, o *orderN) *Pending {
	r := newRec(o, clock.Mono()+int64(time.Hour))
	r.Async, r.Inline = true, true
	p.Add(r)
	return r
}

// sendAndAnswer drains p's next batch on s and handles its success as
// s's reader (inline) or the sender (not inline) does.
func sendAndAnswer(t *testing.T, s *Sink, p *PartitionQueue, gen uint64, inline bool) {
	t.Helper()
	s.takeReady()
	b, _, _, _ := p.drain(s, gen, clock.Mono(), 1<<20)
	if b == nil {
		t.Fatalf("request %d: no batch: %s", gen, p.DebugString())
	}
	s.handle([]*Batch{b}, okResp("t", 0, 0), nil, 0, inline)
}

func scheduled(c *callbacks) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

func TestCallbacks_InlineStartedOnTheReader(t *testing.T) {
	s1, _, p := windowSinks(false)
	var o orderN
	a := inlineRec(p, &o)
	sendAndAnswer(t, s1, p, 1, true)
	if len(o.got) != 1 || o.got[0] != a {
		t.Fatalf("%d callbacks ran on the reader, want the Inline record's (scheduled: %d)", len(o.got), scheduled(&s1.cb))
	}
	if n := scheduled(&s1.cb); n != 0 {
		t.Fatalf("%d queues scheduled on the callback goroutine, want none", n)
	}
	// Not on a reader (the sender, under own): the callback goroutine.
	b := inlineRec(p, &o)
	sendAndAnswer(t, s1, p, 2, false)
	if len(o.got) != 1 {
		t.Fatalf("%d callbacks ran on the sender, want none", len(o.got)-1)
	}
	s1.cb.drain()
	if len(o.got) != 2 || o.got[1] != b {
		t.Fatalf("%d callbacks after the callback goroutine ran, want both", len(o.got))
	}
}

func TestCallbacks_RunningQueueNotStartedAgain(t *testing.T) {
	s1, s2, p := windowSinks(false)
	var o orderN
	a := inlineRec(p, &o)
	sendAndAnswer(t, s1, p, 1, false) // a's queue: scheduled on sink 1's callback goroutine
	p.SetLeader(s2)
	b := inlineRec(p, &o)
	sendAndAnswer(t, s2, p, 1, true) // sink 2's reader completes b: it joins the running queue
	if len(o.got) != 0 {
		t.Fatalf("%d callbacks ran on sink 2's reader, want none: the queue belongs to sink 1's callback goroutine", len(o.got))
	}
	if n := scheduled(&s2.cb); n != 0 {
		t.Fatalf("the running queue was scheduled on sink 2 too (%d)", n)
	}
	s1.cb.drain()
	if len(o.got) != 2 || o.got[0] != a || o.got[1] != b {
		t.Fatalf("%d callbacks, want a then b", len(o.got))
	}
}
