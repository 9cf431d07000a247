package sink

import (
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/internal/clock"
)

// retriedThenAcked sets up one partition with async records A and B in two
// pipelined requests: A's is answered NOT_ENOUGH_REPLICAS_AFTER_APPEND (the
// broker may have appended it; A waits for a retry), B's is acknowledged.
// A's and B's deadlines are da and db.
func retriedThenAcked(t *testing.T, da, db int64) (s1 *Sink, p *PartitionQueue, o *orderN, a, b *Pending) {
	t.Helper()
	s1, p, o, a, bs := retriedThen(t, da, db, 1, okResp("t", 0, 0))
	return s1, p, o, a, bs[0]
}

// retriedThen is retriedThenAcked with nB records in B's batch, whose
// request is answered bResp.
func retriedThen(t *testing.T, da, db int64, nB int, bResp *kmsg.ProduceResponse) (s1 *Sink, p *PartitionQueue, o *orderN, a *Pending, b []*Pending) {
	t.Helper()
	s1, p, nt, _ := idemPartition()
	s1.cb = callbacks{eng: s1.eng, wake: make(chan struct{}, 1)}
	pipelining(t, s1, p, nt, 1)
	o = &orderN{}
	var bs []*Batch
	for gen, d := range []int64{da, db} {
		n := 1
		if gen == 1 {
			n = nB
		}
		for range n {
			r := newRec(o, d)
			r.Async = true
			p.Add(r)
			if gen == 0 {
				a = r
			} else {
				b = append(b, r)
			}
		}
		s1.takeReady()
		bt, _, _, _ := p.drain(s1, uint64(gen+2), clock.Mono(), 1<<20)
		if bt == nil || len(bt.recs) != n {
			t.Fatalf("request %d: no batch of %d: %s", gen+2, n, p.DebugString())
		}
		s1.track(uint64(gen+2), []*Batch{bt})
		bs = append(bs, bt)
	}
	s1.untrack(2)
	s1.handle(bs[:1], okResp("t", 0, kerr.NotEnoughReplicasAfterAppend.Code), nil, 0, false)
	s1.untrack(3)
	s1.handle(bs[1:], bResp, nil, 0, false)
	s1.cb.drain()
	return s1, p, o, a, b
}

// B, acknowledged while A (sent before it) waits for its retry, must not
// have its callback run before A's: when A's records expire, A's outcome
// goes out first, then B's.
func TestCallbacks_ParkedBehindRetryReleasedWhenItExpires(t *testing.T) {
	far := clock.Mono() + int64(1<<40)
	s1, p, o, a, b := retriedThenAcked(t, far, far)
	if len(o.got) != 0 {
		t.Fatalf("%d callbacks ran while A waits for its retry (first: A=%v), want none", len(o.got), o.got[0] == a)
	}
	a.Deadline = clock.Mono() - 1
	p.retry[0].deadline = a.Deadline
	ExpireAll([]*PartitionQueue{p}, []*Sink{s1})
	s1.cb.drain()
	if len(o.got) != 2 || o.got[0] != a || o.got[1] != b {
		t.Fatalf("callbacks %d (first is A: %v), want A (expired) then B", len(o.got), len(o.got) > 0 && o.got[0] == a)
	}
	if a.Err == nil || b.Err != nil {
		t.Fatalf("A err %v (want the expiry), B err %v (want acknowledged)", a.Err, b.Err)
	}
}

// A parked outcome still goes out by its own deadline, even when the
// batch it waits for has a later one (a Send's ctx can set it).
func TestCallbacks_ParkedOutcomeKeepsItsDeadline(t *testing.T) {
	far := clock.Mono() + int64(1<<40)
	s1, p, o, a, b := retriedThenAcked(t, far, far)
	if len(p.parked) != 1 || len(o.got) != 0 {
		t.Fatalf("%d outcomes parked, %d callbacks run, want B parked behind A", len(p.parked), len(o.got))
	}
	b.Deadline = clock.Mono() - 1
	p.parked[0].deadline = b.Deadline
	ExpireAll([]*PartitionQueue{p}, []*Sink{s1})
	s1.cb.drain()
	if len(o.got) != 1 || o.got[0] != b || b.Err != nil {
		t.Fatalf("%d callbacks, want B's (acknowledged) at its deadline while A waits", len(o.got))
	}
	if a.state.Load() != stateSending {
		t.Fatalf("A's state %d, want still sending", a.state.Load())
	}
}

// A's retry is in flight when A's record expires: A's outcome (unknown, at
// its deadline) goes out first and releases B's, parked behind it, in the
// same reaper pass.
func TestCallbacks_ParkedReleasedWhenInflightRetryExpires(t *testing.T) {
	far := clock.Mono() + int64(1<<40)
	s1, p, o, a, b := retriedThenAcked(t, far, far)
	p.backoffFired(p.backoffGen)
	s1.takeReady()
	retry, _, _, _ := p.drain(s1, 4, clock.Mono(), 1<<20)
	if retry == nil || len(retry.recs) != 1 || retry.recs[0] != a {
		t.Fatalf("A's retry not drained: %s", p.DebugString())
	}
	s1.track(4, []*Batch{retry})
	a.Deadline = clock.Mono() - 1
	retry.deadline = a.Deadline
	ExpireAll([]*PartitionQueue{p}, []*Sink{s1})
	s1.cb.drain()
	if len(o.got) != 2 || o.got[0] != a || o.got[1] != b {
		t.Fatalf("callbacks %d (first is A: %v), want A (expired in flight) then B", len(o.got), len(o.got) > 0 && o.got[0] == a)
	}
}

// With nothing retried, completing a batch costs no allocation and parks
// nothing.
func TestCallbacks_NoRetryNoParking(t *testing.T) {
	_, p, nt, far := idemPartition()
	b := &Batch{p: p, recs: []*Pending{newRec(nt, far)}}
	b.recs[0].Async = true
	out := make([]*Pending, 0, 1)
	if n := testing.AllocsPerRun(100, func() {
		p.mu.Lock()
		out = p.completeLocked(b, b.recs, out[:0])
		p.mu.Unlock()
	}); n != 0 {
		t.Errorf("completeLocked allocated %v times per batch with nothing retried", n)
	}
	if len(out) != 1 || len(p.parked) != 0 {
		t.Errorf("%d outcomes out, %d parked, want 1 and 0", len(out), len(p.parked))
	}
}

// B's batch is refused naming one of its records (INVALID_RECORD, KIP-467)
// while A, sent before it, waits for its retry: the named record's failure
// must not reach its callback before A's outcome.
func TestCallbacks_RecordErrorParkedBehindRetry(t *testing.T) {
	far := clock.Mono() + int64(1<<40)
	resp := okResp("t", 0, kerr.InvalidRecord.Code)
	er := kmsg.NewProduceResponseTopicPartitionErrorRecord()
	er.RelativeOffset = 1
	resp.Topics[0].Partitions[0].ErrorRecords = append(resp.Topics[0].Partitions[0].ErrorRecords, er)
	s1, p, o, a, b := retriedThen(t, far, far, 2, resp)
	if len(o.got) != 0 {
		t.Fatalf("%d callbacks ran while A waits for its retry (first is B's named record: %v), want none", len(o.got), o.got[0] == b[1])
	}
	a.Deadline = clock.Mono() - 1
	p.retry[0].deadline = a.Deadline
	ExpireAll([]*PartitionQueue{p}, []*Sink{s1})
	s1.cb.drain()
	if len(o.got) != 2 || o.got[0] != a || o.got[1] != b[1] || !errors.Is(b[1].Err, kerr.InvalidRecord) {
		t.Fatalf("callbacks %d (first is A: %v), want A (expired) then B's named record (INVALID_RECORD)", len(o.got), len(o.got) > 0 && o.got[0] == a)
	}
}
