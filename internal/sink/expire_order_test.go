package sink

import (
	"testing"

	"github.com/kpush/kpush/internal/clock"
)

// orderN records the order outcomes are delivered in.
type orderN struct{ got []*Pending }

func (o *orderN) Notify(p *Pending) { o.got = append(o.got, p) }

// Records of one partition expiring in several in-flight requests of a
// sink in the same reaper pass: their async callbacks must run in send
// order (SendAsync's promise), not in the order of a map of requests.
func TestExpire_InflightCallbacksInSendOrder(t *testing.T) {
	s1, p, nt, far := idemPartition()
	s1.cb = callbacks{eng: s1.eng, wake: make(chan struct{}, 1)}
	p.Add(newRec(nt, far))
	s1.takeReady()
	first, _, _, _ := p.drain(s1, 1, clock.Mono(), 1<<20)
	s1.handle([]*Batch{first}, okResp("t", 0, 0), nil, 0) // pipelining from here
	var o orderN
	var sent []*Pending
	for gen := uint64(2); gen < 7; gen++ {
		r := newRec(&o, far)
		r.Async = true
		p.Add(r)
		s1.takeReady()
		b, _, _, _ := p.drain(s1, gen, clock.Mono(), 1<<20)
		if b == nil {
			t.Fatalf("request %d: no batch: %s", gen, p.DebugString())
		}
		s1.track(gen, []*Batch{b})
		sent = append(sent, r)
		past := clock.Mono() - 1
		r.Deadline, b.deadline = past, past
	}
	ExpireAll([]*PartitionQueue{p}, []*Sink{s1})
	s1.cb.drain()
	if len(o.got) != len(sent) {
		t.Fatalf("%d outcomes, want %d", len(o.got), len(sent))
	}
	for i := range sent {
		if o.got[i] != sent[i] {
			t.Fatalf("callback %d is the record sent %d-th: expired in-flight records delivered out of send order", i, indexOf(sent, o.got[i]))
		}
	}
}

func indexOf(s []*Pending, p *Pending) int {
	for i, q := range s {
		if q == p {
			return i
		}
	}
	return -1
}
