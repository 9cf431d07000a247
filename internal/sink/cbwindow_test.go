package sink

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kpush/kpush/internal/clock"
)

// Every path that completes a partition's records under its mu (or, for
// batches in flight, under their sink's rmu) must have their async
// outcomes in the partition's callback queue before it lets go of that
// lock: once it does, another goroutine can complete later records of the
// partition and queue them. These tests hold that moment open with a sync
// record completed in the same step, whose Notify (run before the async
// outcomes were handed on, before the fix) blocks while the later outcome
// completes; then the callbacks must still run in send order.

// gateN is a sync record's notifier that blocks until open is closed (or
// a bound passes, so a failing test does not hang); in is closed when it
// starts blocking.
type gateN struct {
	in, open chan struct{}
	once     sync.Once
	opened   sync.Once
}

func newGate() *gateN { return &gateN{in: make(chan struct{}), open: make(chan struct{})} }

func (g *gateN) Notify(*Pending) {
	g.once.Do(func() { close(g.in) })
	select {
	case <-g.open:
	case <-time.After(10 * time.Second):
	}
}

func (g *gateN) release() { g.opened.Do(func() { close(g.open) }) }

// holdWindow runs run on another goroutine until the gate's record is
// notified there, runs compete meanwhile, then lets run finish.
func holdWindow(t *testing.T, g *gateN, run, compete func()) {
	t.Helper()
	defer g.release()
	done := make(chan struct{})
	go func() {
		defer close(done)
		run()
	}()
	select {
	case <-g.in:
	case <-time.After(10 * time.Second):
		t.Fatal("the gate's record was never notified")
	}
	compete()
	g.release()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the held goroutine did not finish")
	}
}

// windowSinks returns an engine's sinks 1 and 2, with callback queues
// that only the test drains, and partition t/0 led by sink 1.
func windowSinks(idemOn bool) (s1, s2 *Sink, p *PartitionQueue) {
	e := testEngine(idemOn)
	s1, s2 = &Sink{eng: e, Node: 1}, &Sink{eng: e, Node: 2}
	for _, s := range []*Sink{s1, s2} {
		s.cb = callbacks{eng: e, wake: make(chan struct{}, 1)}
	}
	p = e.NewPartitionQueue("t", 0)
	p.SetLeader(s1)
	return s1, s2, p
}

func addRec(p *PartitionQueue, n Notifier, deadline int64, async bool) *Pending {
	r := newRec(n, deadline)
	r.Async = async
	p.Add(r)
	return r
}

// drainTracked drains p's next batch into sink s's request gen and tracks
// it, as the sink loop does.
func drainTracked(t *testing.T, s *Sink, p *PartitionQueue, gen uint64) *Batch {
	t.Helper()
	s.takeReady()
	b, _, _, _ := p.drain(s, gen, clock.Mono(), 1<<20)
	if b == nil {
		t.Fatalf("request %d: no batch: %s", gen, p.DebugString())
	}
	s.track(gen, []*Batch{b})
	return b
}

// answer handles request gen's response on sink s, as its reader does.
func answer(s *Sink, gen uint64, b *Batch, code int16) {
	s.untrack(gen)
	s.handle([]*Batch{b}, okResp("t", 0, code), nil, 0, true)
}

// expire makes the records and batch due now.
func expire(b *Batch, recs ...*Pending) {
	d := clock.Mono() - 1
	for _, r := range recs {
		r.Deadline = d
	}
	b.deadline = d
}

// sentAfterMove moves p to sink 2 and sends and acknowledges a new async
// record there, returning it.
func sentAfterMove(t *testing.T, s2 *Sink, p *PartitionQueue, o *orderN, far int64) *Pending {
	p.SetLeader(s2)
	r := addRec(p, o, far, true)
	answer(s2, 1, drainTracked(t, s2, p, 1), 0)
	return r
}

func TestCallbacks_OrderWhenCompletedOutsideTheResponse(t *testing.T) {
	far := clock.Mono() + int64(time.Hour)
	for _, tc := range []struct {
		name string
		// run returns the async record whose callback must come first,
		// the goroutine step that completes it (and the gate's record),
		// and the competitor that completes the later one.
		run func(t *testing.T, s1, s2 *Sink, p *PartitionQueue, o *orderN, g *gateN) (first *Pending, step func(), later func() *Pending)
	}{
		{"reaper expires in flight", func(t *testing.T, s1, _ *Sink, p *PartitionQueue, o *orderN, g *gateN) (*Pending, func(), func() *Pending) {
			pipelining(t, s1, p, &countN{}, 1)
			gs, a := addRec(p, g, far, false), addRec(p, o, far, true)
			b1 := drainTracked(t, s1, p, 2)
			c := addRec(p, o, far, true)
			b2 := drainTracked(t, s1, p, 3)
			expire(b1, gs, a)
			return a, func() { ExpireAll([]*PartitionQueue{p}, []*Sink{s1}) }, func() *Pending {
				answer(s1, 2, b1, 0)
				answer(s1, 3, b2, 0)
				return c
			}
		}},
		{"reaper expires a retry", func(t *testing.T, s1, _ *Sink, p *PartitionQueue, o *orderN, g *gateN) (*Pending, func(), func() *Pending) {
			pipelining(t, s1, p, &countN{}, 1)
			gs, a := addRec(p, g, far, false), addRec(p, o, far, true)
			b1 := drainTracked(t, s1, p, 2)
			c := addRec(p, o, far, true)
			b2 := drainTracked(t, s1, p, 3)
			answer(s1, 2, b1, kerr.NotEnoughReplicas.Code) // b1 waits for a retry, b2 in flight
			expire(b1, gs, a)
			return a, func() { ExpireAll([]*PartitionQueue{p}, []*Sink{s1}) }, func() *Pending {
				answer(s1, 3, b2, 0)
				return c
			}
		}},
		{"reaper expires buffered", func(t *testing.T, _, s2 *Sink, p *PartitionQueue, o *orderN, g *gateN) (*Pending, func(), func() *Pending) {
			past := clock.Mono() - 1
			addRec(p, g, past, false)
			a := addRec(p, o, past, true)
			return a, func() { ExpireAll([]*PartitionQueue{p}, nil) }, func() *Pending {
				return sentAfterMove(t, s2, p, o, far)
			}
		}},
		{"drain expires buffered", func(t *testing.T, s1, s2 *Sink, p *PartitionQueue, o *orderN, g *gateN) (*Pending, func(), func() *Pending) {
			past := clock.Mono() - 1
			addRec(p, g, past, false)
			a := addRec(p, o, past, true)
			return a, func() {
					s1.own.Lock()
					s1.produce(false, 0)
					s1.own.Unlock()
				}, func() *Pending {
					return sentAfterMove(t, s2, p, o, far)
				}
		}},
		{"failUnsent", func(t *testing.T, s1, s2 *Sink, p *PartitionQueue, o *orderN, g *gateN) (*Pending, func(), func() *Pending) {
			addRec(p, g, far, false)
			a := addRec(p, o, far, true)
			return a, func() {
					s1.own.Lock()
					s1.failReady(errors.New("authentication failed"))
					s1.own.Unlock()
				}, func() *Pending {
					return sentAfterMove(t, s2, p, o, far)
				}
		}},
		{"FailBuffered", func(t *testing.T, s1, _ *Sink, p *PartitionQueue, o *orderN, g *gateN) (*Pending, func(), func() *Pending) {
			pipelining(t, s1, p, &countN{}, 1)
			addRec(p, g, far, false)
			a := addRec(p, o, far, true)
			b1 := drainTracked(t, s1, p, 2)
			c := addRec(p, o, far, true)
			b2 := drainTracked(t, s1, p, 3)
			answer(s1, 2, b1, kerr.NotEnoughReplicas.Code)
			return a, func() { FailBuffered([]*PartitionQueue{p}, errors.New("fatal")) }, func() *Pending {
				answer(s1, 3, b2, 0)
				return c
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s1, s2, p := windowSinks(true)
			var o orderN
			g := newGate()
			first, step, later := tc.run(t, s1, s2, p, &o, g)
			var second *Pending
			holdWindow(t, g, step, func() { second = later() })
			s1.cb.drain()
			s2.cb.drain()
			if len(o.got) != 2 || o.got[0] != first || o.got[1] != second {
				t.Fatalf("%d async callbacks (earlier record first: %v), want the earlier record's then the later one's",
					len(o.got), len(o.got) > 0 && o.got[0] == first)
			}
		})
	}
}
