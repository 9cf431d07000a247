package sink

// Partition state-machine tests that drive drain and handle directly, for
// interleavings the end-to-end tests reach only by chance. Each one is a
// regression test for a bug found in review.

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/internal/clock"
	"github.com/kpush/kpush/internal/idem"
	"github.com/kpush/kpush/internal/wire"
)

type countN struct{ n atomic.Int32 }

func (c *countN) Notify(*Pending) { c.n.Add(1) }

func newRec(n Notifier, deadline int64) *Pending {
	r := &Pending{Topic: "t", Size: 10, Done: n}
	r.Reset()
	r.Rec.Value = []byte("v")
	r.Enqueued = clock.Mono()
	r.Deadline = deadline
	return r
}

func testEngine(idemOn bool) *Engine {
	m := idem.NewManager(false)
	if idemOn {
		m = idem.NewLoaded(idem.ID{Producer: 1, Epoch: 0})
	}
	return NewEngine(Config{MaxBatchBytes: 1 << 20, RetryBackoff: time.Hour, MaxInflight: 5, Acks: -1}, m)
}

// A partition drained into sink A's request g and later taken by sink B in
// B's request g must not be skipped as "already in this request".
func TestDrain_RequestNumberIsPerSink(t *testing.T) {
	e := testEngine(false)
	s1, s2 := &Sink{eng: e, Node: 1}, &Sink{eng: e, Node: 2}
	var nt countN
	p := e.NewPartitionQueue("t", 0)
	p.SetLeader(s1)
	far := clock.Mono() + int64(time.Hour)
	b := sendOne(s1, p, &nt, far, 7)
	if b == nil {
		t.Fatal("no batch")
	}
	s1.handle([]*Batch{b}, nil, nil, 0, false) // acks=0 style success
	p.SetLeader(s2)
	p.Add(newRec(&nt, far))
	parts := s2.takeReady()
	if len(parts) != 1 {
		t.Fatalf("not queued on s2: %d", len(parts))
	}
	b2, _, more, _ := p.drain(s2, 7, clock.Mono(), 1<<20) // s2's 7th request
	p.Add(newRec(&nt, far))
	if b2 == nil && !more {
		t.Errorf("stall: partition skipped by another sink's request number and never re-queued")
	}
}

// A retry batch that expires in drain (nothing in flight) must leave the
// records buffered behind it queued for sending.
func TestDrain_RetryExpiryKeepsRecordsQueued(t *testing.T) {
	e := testEngine(true)
	s1 := &Sink{eng: e, Node: 1}
	var nt countN
	p := e.NewPartitionQueue("t", 0)
	p.SetLeader(s1)
	now := clock.Mono()
	p.Add(newRec(&nt, now+int64(time.Second)))
	s1.takeReady()
	b, _, _, _ := p.drain(s1, 1, now, 1<<20)
	if b == nil {
		t.Fatal("no batch")
	}
	// definitely not written, retriable
	s1.handle([]*Batch{b}, nil, errors.Join(errNotSent, errors.New("x")), 0, false)
	p.Add(newRec(&nt, now+int64(time.Hour)))
	p.endBackoff() // the backoff timer fires after the first record's deadline
	s1.takeReady()
	b2, exp, more, _ := p.drain(s1, 2, now+2*int64(time.Second), 1<<20)
	p.mu.Lock()
	queued, nrecs := p.queued, len(p.recs)
	p.mu.Unlock()
	_ = exp
	if b2 == nil && !more && !queued && nrecs > 0 {
		t.Errorf("stall: buffered record left unqueued after retry expiry in drain")
	}
}

func okResp(topic string, part int32, code int16) *kmsg.ProduceResponse {
	r := kmsg.NewPtrProduceResponse()
	rt := kmsg.NewProduceResponseTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceResponseTopicPartition()
	rp.Partition = part
	rp.ErrorCode = code
	rt.Partitions = append(rt.Partitions, rp)
	r.Topics = append(r.Topics, rt)
	return r
}

// idemPartition returns an idempotent engine's partition led by a test sink,
// a notifier for its records and a deadline far in the future.
func idemPartition() (*Sink, *PartitionQueue, *countN, int64) {
	e := testEngine(true)
	s1 := &Sink{eng: e, Node: 1}
	p := e.NewPartitionQueue("t", 0)
	p.SetLeader(s1)
	return s1, p, &countN{}, clock.Mono() + int64(time.Hour)
}

// next is the sink loop's step for p: it drains p's next batch into
// request gen of s (nil when p sends nothing).
func next(s *Sink, p *PartitionQueue, gen uint64) *Batch {
	s.takeReady()
	b, _, _, _ := p.drain(s, gen, clock.Mono(), 1<<20)
	return b
}

// sendOne buffers one record (outcome to n, deadline d) in p and drains
// p's next batch into request gen of s.
func sendOne(s *Sink, p *PartitionQueue, n Notifier, d int64, gen uint64) *Batch {
	p.Add(newRec(n, d))
	return next(s, p, gen)
}

// pipelining sends one record (outcome to n) in request gen and
// acknowledges it: until a batch under the current producer ID is
// acknowledged a partition keeps one batch in flight, after that up to five.
func pipelining(t *testing.T, s *Sink, p *PartitionQueue, n Notifier, gen uint64) {
	t.Helper()
	first := sendOne(s, p, n, clock.Mono()+int64(time.Hour), gen)
	if first == nil {
		t.Fatalf("no first batch: %s", p.DebugString())
	}
	s.handle([]*Batch{first}, okResp("t", 0, 0), nil, 0, false)
}

// checkPipelines fails t unless p's next batch (request gen) and one more
// record (request gen+1) are in flight together, after what happened.
func checkPipelines(t *testing.T, s *Sink, p *PartitionQueue, n Notifier, far int64, gen uint64, after string) {
	t.Helper()
	second := next(s, p, gen)
	third := sendOne(s, p, n, far, gen+1)
	if second == nil || third == nil {
		t.Fatalf("no pipelining after %s: %s", after, p.DebugString())
	}
}

// Split halves share their drain order; when the second half is dropped
// (definitely not written) while the first (maybe written) is retried, the
// first must keep its sequence, or the broker could take it twice.
func TestSplit_DroppedHalfDoesNotRenumberEarlierHalf(t *testing.T) {
	s1, p, nt, far := idemPartition()
	pipelining(t, s1, p, nt, 0)
	p.Add(newRec(nt, far))
	b := sendOne(s1, p, nt, far, 1)
	if b == nil || len(b.recs) != 2 {
		t.Fatal("want one batch of 2")
	}
	s1.handle([]*Batch{b}, okResp("t", 0, kerr.MessageTooLarge.Code), nil, 0, false)
	a := next(s1, p, 2)
	bb := next(s1, p, 3)
	if a == nil || bb == nil {
		t.Fatalf("halves not drained: %s", p.DebugString())
	}
	aSeq := a.seq
	// first half: leader appended, replicas slow -> REQUEST_TIMED_OUT (maybe written)
	s1.handle([]*Batch{a}, okResp("t", 0, kerr.RequestTimedOut.Code), nil, 0, false)
	// second half: single oversized record
	s1.handle([]*Batch{bb}, okResp("t", 0, kerr.MessageTooLarge.Code), nil, 0, false)
	p.endBackoff()
	again := next(s1, p, 4)
	if again == nil {
		t.Fatalf("no retry: %s", p.DebugString())
	}
	if again.unknown && again.seq != aSeq {
		t.Errorf("duplicate risk: maybe-written batch resent with new sequence %d (was %d) under the same epoch", again.seq, aSeq)
	}
}

// Outcomes pushed to a sink's callback queue after its goroutine exited
// (a reaper tick racing Close) must still be delivered.
func TestCallbacks_PushAfterExitIsDelivered(t *testing.T) {
	e := testEngine(false)
	// Add wakes the sink's loop, which may dial before Stop lands: without
	// a wire config that dial panicked, and the loop's deferred s.own.Lock
	// (own held by the loop) turned the panic into a hang in Wait.
	e.cfg.Wire = &wire.Config{Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no broker in this test")
	}}
	s := e.NewSink(1, "127.0.0.1:1")
	var nt countN
	p := e.NewPartitionQueue("t", 0)
	p.SetLeader(s)
	r := newRec(&nt, clock.Mono()-1)
	r.Async = true
	p.Add(r)
	e.Stop()
	e.Wait()
	ExpireAll([]*PartitionQueue{p}, nil) // a reaper tick in progress when Stop landed
	FailAll([]*PartitionQueue{p}, errors.New("closed"))
	if nt.n.Load() != 1 { // inline delivery: no waiting needed
		t.Errorf("LOST: async record got %d outcomes", nt.n.Load())
	}
}

// Until a batch under the current producer ID is acknowledged on a
// partition, only one batch is in flight: a broker with no state for the
// ID accepts any first sequence, so a second batch could be written ahead
// of a first one that failed (reordering; seen once in a million records of
// reliability scenario 06 before this rule).
func TestPartition_OneBatchInFlightUntilFirstAck(t *testing.T) {
	s1, p, nt, far := idemPartition()
	first := sendOne(s1, p, nt, far, 1)
	if first == nil {
		t.Fatal("no first batch")
	}
	p.Add(newRec(nt, far))
	if b := next(s1, p, 2); b != nil {
		t.Fatalf("second batch drained before the first was acknowledged: %s", p.DebugString())
	}
	s1.handle([]*Batch{first}, okResp("t", 0, 0), nil, 0, false)
	checkPipelines(t, s1, p, nt, far, 3, "the first acknowledgement")
}
