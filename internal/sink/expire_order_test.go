package sink

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

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
	pipelining(t, s1, p, nt, 1)
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

// A record's deadline can come from its Send's ctx, so a later retry batch
// can be due before the head one. With nothing in flight it must be given
// up as not written (its sequence reused), not left queued with its
// records ended outcome unknown while the head batch keeps it company.
func TestExpire_LaterRetryDueFirstIsDropped(t *testing.T) {
	s1, p, nt, far := idemPartition()
	now := clock.Mono()
	p.Add(newRec(nt, far))
	s1.takeReady()
	b1, _, _, _ := p.drain(s1, 1, now, 1<<20)
	s1.handle([]*Batch{b1}, okResp("t", 0, 0), nil, 0, false) // steady: pipelining
	p.Add(newRec(nt, far))
	s1.takeReady()
	b2, _, _, _ := p.drain(s1, 2, now, 1<<20)
	soon := newRec(nt, now+int64(time.Second)) // a short ctx deadline
	p.Add(soon)
	s1.takeReady()
	b3, _, _, _ := p.drain(s1, 3, now, 1<<20)
	if b2 == nil || b3 == nil {
		t.Fatalf("batches not drained: %s", p.DebugString())
	}
	// Refused before appending (retriable): both wait for a retry, in a
	// backoff of an hour.
	s1.handle([]*Batch{b2}, okResp("t", 0, kerr.NotEnoughReplicas.Code), nil, 0, false)
	s1.handle([]*Batch{b3}, okResp("t", 0, kerr.NotEnoughReplicas.Code), nil, 0, false)
	failed, held, _, _ := p.expireDue(now + 2*int64(time.Second))
	if len(held) != 0 || len(failed) != 1 || failed[0] != soon || soon.Unknown {
		t.Fatalf("due record of the second retry batch: %d failed, %d held (unknown=%v), want it failed as not written: %s",
			len(failed), len(held), soon.Unknown, p.DebugString())
	}
	if len(p.retry) != 1 || p.retry[0] != b2 {
		t.Errorf("retries left: %s, want only the head batch", p.DebugString())
	}
}
