package sink

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/internal/clock"
	"github.com/kpush/kpush/internal/idem"
)

// holdRetryLog is a slog handler that blocks the "kpush: retrying batch"
// line of one partition until release is closed (or a bound passes, so a
// failing test does not hang); held is closed when it starts blocking.
type holdRetryLog struct {
	part    int64
	held    chan struct{}
	release chan struct{}
	once    sync.Once
}

func (h *holdRetryLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *holdRetryLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *holdRetryLog) WithGroup(string) slog.Handler            { return h }

func (h *holdRetryLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "kpush: retrying batch" {
		return nil
	}
	ours := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "partition" && a.Value.Int64() == h.part {
			ours = true
		}
		return true
	})
	if ours {
		h.once.Do(func() { close(h.held) })
		select {
		case <-h.release:
		case <-time.After(10 * time.Second):
		}
	}
	return nil
}

// twoPartResp answers partition 0 of topic t with code0 and partition 1
// with code1.
func twoPartResp(code0, code1 int16) *kmsg.ProduceResponse {
	r := okResp("t", 0, code0)
	rp := kmsg.NewProduceResponseTopicPartition()
	rp.Partition, rp.ErrorCode = 1, code1
	r.Topics[0].Partitions = append(r.Topics[0].Partitions, rp)
	return r
}

// One response of sink 1 acknowledges A (partition 0) and refuses a batch
// of partition 1 (NOT_LEADER). While sink 1's reader is still in that
// response — here the user's Logger blocks on partition 1's "retrying
// batch" line — partition 0 moves to sink 2, whose reader acknowledges B,
// sent after A. A's callback must still run before B's: A's outcome has
// to be in partition 0's callback queue before the partition can be sent
// elsewhere (the 08-metadata-flaps failure, docs/internals-flakes.md).
func TestCallbacks_OrderAcrossLeaderMoveWhileResponseHandled(t *testing.T) {
	h := &holdRetryLog{part: 1, held: make(chan struct{}), release: make(chan struct{})}
	defer func() {
		select {
		case <-h.release:
		default:
			close(h.release)
		}
	}()
	e := NewEngine(Config{MaxBatchBytes: 1 << 20, RetryBackoff: time.Hour, MaxInflight: 5, Acks: -1,
		Logger: slog.New(h)}, idem.NewManager(false))
	s1, s2 := &Sink{eng: e, Node: 1}, &Sink{eng: e, Node: 2}
	for _, s := range []*Sink{s1, s2} {
		s.cb = callbacks{eng: e, wake: make(chan struct{}, 1)}
	}
	p0, p1 := e.NewPartitionQueue("t", 0), e.NewPartitionQueue("t", 1)
	p0.SetLeader(s1)
	p1.SetLeader(s1)
	far := clock.Mono() + int64(time.Hour)
	var o orderN
	rec := func(p *PartitionQueue) *Pending {
		r := newRec(&o, far)
		r.Async = true
		p.Add(r)
		return r
	}
	drain := func(s *Sink, p *PartitionQueue, gen uint64) *Batch {
		t.Helper()
		s.takeReady()
		b, _, _, _ := p.drain(s, gen, clock.Mono(), 1<<20)
		if b == nil {
			t.Fatalf("no batch for request %d: %s", gen, p.DebugString())
		}
		return b
	}
	a, other := rec(p0), rec(p1)
	req := []*Batch{drain(s1, p0, 1), drain(s1, p1, 1)}

	handled := make(chan struct{})
	go func() {
		defer close(handled)
		s1.handle(req, twoPartResp(0, kerr.NotLeaderForPartition.Code), nil, 0, true)
	}()
	select {
	case <-h.held:
	case <-time.After(10 * time.Second):
		t.Fatal("sink 1's reader never logged partition 1's retry")
	}
	// Sink 1's reader is inside the response, past A's batch: partition 0
	// is unlocked and moves to sink 2, which sends and completes B.
	p0.SetLeader(s2)
	b := rec(p0)
	s2.handle([]*Batch{drain(s2, p0, 1)}, okResp("t", 0, 0), nil, 0, true)
	close(h.release)
	select {
	case <-handled:
	case <-time.After(10 * time.Second):
		t.Fatal("sink 1's reader did not finish the response")
	}
	s1.cb.drain()
	s2.cb.drain()
	if len(o.got) != 2 || o.got[0] != a || o.got[1] != b {
		t.Fatalf("%d callbacks (A first: %v, B second: %v), want A then B", len(o.got),
			len(o.got) > 0 && o.got[0] == a, len(o.got) > 1 && o.got[1] == b)
	}
	if other.state.Load() != stateSending {
		t.Fatalf("partition 1's record state %d, want still sending (waits for a retry)", other.state.Load())
	}
}
