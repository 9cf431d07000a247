package sink

import (
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kpush/kpush/internal/clock"
)

// inflight sets up one pipelining partition with n async records, one in
// each of requests 2..n+1 of s1, all in flight (tracked) and unanswered.
func inflight(t *testing.T, n int) (s1 *Sink, p *PartitionQueue, o *orderN, rs []*Pending, bs []*Batch) {
	t.Helper()
	s1, p, nt, far := idemPartition()
	s1.cb = callbacks{eng: s1.eng, wake: make(chan struct{}, 1)}
	pipelining(t, s1, p, nt, 1)
	o = &orderN{}
	for gen := uint64(2); gen < uint64(n+2); gen++ {
		r := newRec(o, far)
		r.Async = true
		p.Add(r)
		b := next(s1, p, gen)
		if b == nil {
			t.Fatalf("request %d: no batch: %s", gen, p.DebugString())
		}
		s1.track(gen, []*Batch{b})
		rs, bs = append(rs, r), append(bs, b)
	}
	return s1, p, o, rs, bs
}

// twoInflight is inflight with two records, A and C.
func twoInflight(t *testing.T) (s1 *Sink, p *PartitionQueue, o *orderN, a, c *Pending, ba, bc *Batch) {
	t.Helper()
	s1, p, o, rs, bs := inflight(t, 2)
	return s1, p, o, rs[0], rs[1], bs[0], bs[1]
}

// gotOrder fails t unless o saw exactly want, in order.
func gotOrder(t *testing.T, o *orderN, names map[*Pending]string, want ...*Pending) {
	t.Helper()
	var got, w []string
	for _, r := range o.got {
		got = append(got, names[r])
	}
	for _, r := range want {
		w = append(w, names[r])
	}
	if len(got) != len(w) {
		t.Fatalf("callbacks %v, want %v", got, w)
	}
	for i := range w {
		if got[i] != w[i] {
			t.Fatalf("callbacks %v, want %v", got, w)
		}
	}
}

// A's request is answered with a retriable error while C's (sent after it)
// is still in flight: A waits in the rewind. When both records' deadlines
// pass in one reaper pass, A's callback must run before C's — in-flight
// batches are not always older than a partition's retries.
func TestExpire_RewoundBeforeLaterInflightInOnePass(t *testing.T) {
	s1, p, o, a, c, ba, bc := twoInflight(t)
	s1.untrack(2)
	s1.handle([]*Batch{ba}, okResp("t", 0, kerr.NotEnoughReplicasAfterAppend.Code), nil, 0, false)
	s1.cb.drain()
	if len(p.rewound) != 1 || p.inflight != 1 {
		t.Fatalf("want A rewound behind C in flight: %s", p.DebugString())
	}
	past := clock.Mono() - 1
	a.Deadline, ba.deadline, c.Deadline, bc.deadline = past, past, past, past
	ExpireAll([]*PartitionQueue{p}, []*Sink{s1})
	s1.cb.drain()
	gotOrder(t, o, map[*Pending]string{a: "A", c: "C"}, a, c)
	if !errors.Is(a.Err, ErrDeliveryTimeout) || !errors.Is(c.Err, ErrDeliveryTimeout) {
		t.Fatalf("errors A %v, C %v, want both the delivery timeout", a.Err, c.Err)
	}
}

// A waits for a retry (backoff) and R is buffered behind it when the
// partition's records are failed (FailBuffered, and Close's FailAll): A's
// callback runs before R's.
func TestFailBuffered_RetryBeforeBufferedRecords(t *testing.T) {
	for _, close := range []bool{false, true} {
		name := map[bool]string{false: "FailBuffered", true: "FailAll"}[close]
		t.Run(name, func(t *testing.T) {
			s1, p, o, a, c, ba, bc := twoInflight(t)
			for gen, b := range []*Batch{ba, bc} {
				s1.untrack(uint64(gen + 2))
				s1.handle([]*Batch{b}, okResp("t", 0, kerr.NotEnoughReplicas.Code), nil, 0, false)
			}
			s1.cb.drain()
			if len(p.retry) != 2 || p.inflight != 0 {
				t.Fatalf("want A and C waiting for their retry: %s", p.DebugString())
			}
			r := newRec(o, a.Deadline)
			r.Async = true
			p.Add(r)
			if close {
				s1.cb.closed = true // Close: the callback goroutines are gone
				FailAll([]*PartitionQueue{p}, errors.New("closed"))
			} else {
				FailBuffered([]*PartitionQueue{p}, errors.New("fatal"))
			}
			s1.cb.drain()
			gotOrder(t, o, map[*Pending]string{a: "A", c: "C", r: "R"}, a, c, r)
		})
	}
}

// A and C are in flight when the partition's buffered record R is failed
// (FailBuffered: its topic was deleted, say). R's callback waits for A's
// and C's answers: R was sent after them.
func TestFailBuffered_BufferedWaitsForBatchesInFlight(t *testing.T) {
	s1, p, o, a, c, ba, bc := twoInflight(t)
	r := newRec(o, a.Deadline)
	r.Async = true
	p.Add(r)
	FailBuffered([]*PartitionQueue{p}, errors.New("topic deleted"))
	s1.cb.drain()
	if len(o.got) != 0 {
		t.Fatalf("%d callbacks ran (first is R: %v) while A and C are in flight, want none", len(o.got), o.got[0] == r)
	}
	if r.state.Load() == stateSending || r.Err == nil {
		t.Fatalf("R: state %d, err %v; want failed now, delivered later", r.state.Load(), r.Err)
	}
	names := map[*Pending]string{a: "A", c: "C", r: "R"}
	s1.untrack(2)
	s1.handle([]*Batch{ba}, okResp("t", 0, 0), nil, 0, false)
	s1.cb.drain()
	gotOrder(t, o, names, a)
	s1.untrack(3)
	s1.handle([]*Batch{bc}, okResp("t", 0, kerr.UnknownTopicOrPartition.Code), nil, 0, false)
	s1.cb.drain()
	// C is retried (the topic may come back): R still waits for it, until
	// C's deadline; then C (outcome unknown) and R go out in that order.
	gotOrder(t, o, names, a)
	past := clock.Mono() - 1
	if len(p.parked) != 1 || p.parked[0].recs[0] != r {
		t.Fatalf("want R parked behind C: %s", p.DebugString())
	}
	c.Deadline, bc.deadline, r.Deadline, p.parked[0].deadline = past, past, past, past
	ExpireAll([]*PartitionQueue{p}, []*Sink{s1})
	s1.cb.drain()
	gotOrder(t, o, names, a, c, r)
}

// R, failed while A and C are in flight, keeps its own deadline: when it
// passes in the same reaper pass as C's (A is answered), C's callback runs
// first; when only R's passes, R goes out without waiting for C.
func TestFailBuffered_WaitingBufferedKeepsItsDeadline(t *testing.T) {
	for _, cDue := range []bool{true, false} {
		t.Run(map[bool]string{true: "with C", false: "alone"}[cDue], func(t *testing.T) {
			s1, p, o, a, c, ba, bc := twoInflight(t)
			r := newRec(o, a.Deadline)
			r.Async = true
			p.Add(r)
			FailBuffered([]*PartitionQueue{p}, errors.New("topic deleted"))
			s1.untrack(2)
			s1.handle([]*Batch{ba}, okResp("t", 0, 0), nil, 0, false)
			past := clock.Mono() - 1
			if len(p.parked) != 1 || p.parked[0].recs[0] != r {
				t.Fatalf("want R parked behind C: %s", p.DebugString())
			}
			r.Deadline, p.parked[0].deadline = past, past
			if cDue {
				c.Deadline, bc.deadline = past, past
			}
			ExpireAll([]*PartitionQueue{p}, []*Sink{s1})
			s1.cb.drain()
			names := map[*Pending]string{a: "A", c: "C", r: "R"}
			if cDue {
				gotOrder(t, o, names, a, c, r)
			} else {
				gotOrder(t, o, names, a, r)
			}
		})
	}
}

// A's and C's requests fail (A's maybe written) and B's, between them, is
// acknowledged: B is parked behind A. A's retry is in flight, C's waits
// when all three are due in one reaper pass: the callbacks run A, B, C —
// a partition's batches in flight, its parked outcomes and its waiting
// retries interleave in send order.
func TestExpire_ResentRetryParkedAndWaitingRetryInOnePass(t *testing.T) {
	s1, p, o, rs, bs := inflight(t, 3)
	a, b, c := rs[0], rs[1], rs[2]
	for i, code := range []int16{kerr.NotEnoughReplicasAfterAppend.Code, 0, kerr.NotEnoughReplicas.Code} {
		s1.untrack(uint64(i + 2))
		s1.handle(bs[i:i+1], okResp("t", 0, code), nil, 0, false)
	}
	s1.cb.drain()
	if len(p.retry) != 2 || len(p.parked) != 1 || len(o.got) != 0 {
		t.Fatalf("want A and C waiting for a retry, B parked: %s, %d callbacks", p.DebugString(), len(o.got))
	}
	p.backoffFired(p.backoffGen)
	retryA := next(s1, p, 5)
	if retryA == nil || retryA.recs[0] != a || len(p.retry) != 1 {
		t.Fatalf("A's retry not drained alone: %s", p.DebugString())
	}
	s1.track(5, []*Batch{retryA})
	past := clock.Mono() - 1
	a.Deadline, retryA.deadline = past, past
	b.Deadline, p.parked[0].deadline = past, past
	c.Deadline, p.retry[0].deadline = past, past
	ExpireAll([]*PartitionQueue{p}, []*Sink{s1})
	s1.cb.drain()
	gotOrder(t, o, map[*Pending]string{a: "A", b: "B", c: "C"}, a, b, c)
}
