package sink

import (
	"runtime"
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
