package kpush_test

// Reliability scenarios 16–23 (issue 11): the liveness, bound and order
// defects an independent review found and the first 21 scenarios missed.
// Each names the defect it reproduces; a scenario (or a check) that fails
// on today's engine is gated through awaitingFix (awaiting_fix_test.go).
// Faults here last a stated time, longer than the delivery timeout, so
// these scenarios do not scale with -kpush.long (noScale).

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/internal/batch"
)

// relDefectScenarios are the scenarios of this file, in TestReliability's
// order.
var relDefectScenarios = []func() *relScenario{
	relStallAfterExpiry,
	relCancelStormStuckPartition,
	relTopicDeleted,
	relTopicDenied,
	relBrokerRemovedForGood,
	relCallbackOrderLeaderMoves,
	relBlackHole,
	relHalfOpen,
	relPerRecordError,
	relLongOutage,
	relLostProducerState,
}

// relFault runs a fault for a stated time once a share of the outcomes is
// in, then calls e.faultEnded.
type relFault struct {
	once    sync.Once
	startAt atomic.Int64 // ns since t0; 0 before
	endAt   atomic.Int64
	started chan struct{} // closed when the fault starts
	ended   chan struct{}
}

func newRelFault() *relFault {
	return &relFault{started: make(chan struct{}), ended: make(chan struct{})}
}

// maybeStart starts the fault (start, then stop after d) when at least
// share of the records have outcomes.
func (f *relFault) maybeStart(e *relEnv, share float64, d time.Duration, start, stop func()) {
	if e.outcomes.Load() < int64(float64(e.records())*share) {
		return
	}
	f.once.Do(func() {
		f.startAt.Store(e.now())
		start()
		close(f.started)
		time.AfterFunc(d, func() { // the fault's length is the scenario's subject
			stop()
			f.endAt.Store(e.now())
			e.faultEnded()
			close(f.ended)
		})
	})
}

// wait waits (bounded) for the fault to start and end; scenarios call it
// in finish and from senders, so that the senders cannot end the run
// during the fault (a sender may get ahead of the outcomes that start it).
func (f *relFault) wait(e *relEnv) {
	select {
	case <-f.started:
	case <-time.After(30 * time.Second):
		e.t.Errorf("%s: the fault never started", e.sc.name)
		return
	}
	select {
	case <-f.ended:
	case <-time.After(30 * time.Second):
		e.t.Errorf("%s: the fault did not end", e.sc.name)
	}
}

// sentAfterFault reports whether record r's Send began after the fault
// ended (plus margin).
func (f *relFault) sentAfterFault(r *relRecord, margin time.Duration) bool {
	end := f.endAt.Load()
	return end > 0 && r.start > end+int64(margin)
}

// 16 (defect 1). NOT_ENOUGH_REPLICAS on partitions 0–2 for 1.5s, longer
// than the 1s delivery timeout, then the broker recovers: the retries
// expire (definitely not written), and later records of those partitions
// must be sent.
func relStallAfterExpiry() *relScenario {
	f := newRelFault()
	var h *kfake.FaultHandle
	return &relScenario{
		name: "16-not-enough-replicas-past-delivery-timeout", keys: 12, perKey: 300, window: 8, minAcked: 0.5, noScale: true,
		stall: 10 * time.Second, stallDefect: "defect1",
		delivery: time.Second, opts: []kpush.Option{kpush.WithRequestTimeout(300 * time.Millisecond)},
		onOutcome: func(e *relEnv, k, i int, r *relRecord) {
			f.maybeStart(e, 0.1, 1500*time.Millisecond, func() {
				h = e.f.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: e.topic, Partitions: []int32{0, 1, 2}, Err: kerr.NotEnoughReplicas, Count: -1})
			}, func() { h.Remove() })
		},
		perRecord: func(e *relEnv, k, i int) {
			if i == e.perKey/2 {
				f.wait(e) // half of every key's records go after the fault
			}
		},
		checkErr: func(e *relEnv, k, i int, err error) error {
			r := &e.recs[k][i]
			switch {
			case f.sentAfterFault(r, 0):
				e.violate("partition not sending after the fault ended", "record %d/%d sent %v after the fault ended: %v", k, i, time.Duration(r.start-f.endAt.Load()), err)
				return nil
			case errors.Is(err, kpush.ErrDeliveryTimeout):
				return nil
			}
			return err
		},
		finish: func(e *relEnv) { f.wait(e) },
	}
}

// 17 (defect 2). Broker 0 refuses every connection, so the partitions it
// leads cannot drain, while synchronous Sends of 1 KiB records with 5ms
// contexts pour in against a 256 KiB buffer: the cancelled records (their space released at once)
// must not pile up in those partitions beyond the memory bound.
func relCancelStormStuckPartition() *relScenario {
	return &relScenario{
		name: "17-cancel-storm-stuck-partition", keys: 48, perKey: 300, noScale: true,
		maxBufBytes: 256 << 10, valuePad: 1000,
		setup: func(e *relEnv) { e.net.refusePort.Store(int64(e.ports[0])) },
		ctxFor: func(e *relEnv, k, i int, rng *rand.Rand) (context.Context, context.CancelFunc) {
			return context.WithTimeout(e.ctx, 5*time.Millisecond)
		},
		checkErr: func(e *relEnv, k, i int, err error) error {
			if errors.Is(err, context.DeadlineExceeded) {
				return nil
			}
			return err
		},
		finish: func(e *relEnv) { e.net.refusePort.Store(0) },
	}
}

// 18a (defect 3). The topic is deleted once 30% of the outcomes are in:
// records sent after that get a definite error (not written) by their
// deadline, and the producer then stops asking about the topic.
func relTopicDeleted() *relScenario {
	var deletedAt atomic.Int64
	var once sync.Once
	return &relScenario{
		name: "18a-topic-deleted", keys: 8, perKey: 100, allAsync: true, window: 35, minAcked: 0.2, noScale: true, noRead: true,
		delivery: 2 * time.Second,
		onOutcome: func(e *relEnv, k, i int, r *relRecord) {
			if e.outcomes.Load() >= int64(e.records()*3/10) {
				once.Do(func() {
					if err := e.f.DeleteTopic(e.topic); err != nil {
						e.t.Errorf("DeleteTopic: %v", err)
					}
					deletedAt.Store(e.now())
				})
			}
		},
		checkErr: func(e *relEnv, k, i int, err error) error {
			d := deletedAt.Load()
			if r := &e.recs[k][i]; d > 0 && r.start > d+int64(100*time.Millisecond) && !errors.Is(err, kpush.ErrNotWritten) {
				e.violate("indefinite error for a deleted topic", "record %d/%d sent after the topic was deleted: %v, want a definite error", k, i, err)
			}
			return nil
		},
	}
}

// 18b (defect 3). Every metadata answer denies the topic
// (TOPIC_AUTHORIZATION_FAILED): records fail as not written, and the
// producer does not ask again ten times a second.
func relTopicDenied() *relScenario {
	return &relScenario{
		name: "18b-topic-denied", keys: 4, perKey: 50, allAsync: true, windowDiv: 1, noScale: true, noRead: true,
		delivery: 2 * time.Second,
		setup: func(e *relEnv) {
			e.f.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Metadata}, Topic: e.topic, Err: kerr.TopicAuthorizationFailed, Count: -1})
		},
		checkErr: func(e *relEnv, k, i int, err error) error {
			if !errors.Is(err, kpush.ErrNotWritten) {
				return err
			}
			return nil
		},
	}
}

// 18c (defect 3). A broker is removed from the cluster for good (its
// partitions move to the others): once metadata says so, kpush must stop
// dialling it. A listener on its old port counts the dials.
func relBrokerRemovedForGood() *relScenario {
	var once sync.Once
	var dials atomic.Int64
	var removed atomic.Int64
	var ln net.Listener // set once, before removed
	return &relScenario{
		name: "18c-broker-removed-for-good", keys: 12, perKey: 300, window: 8, minAcked: 1, noScale: true,
		onOutcome: func(e *relEnv, k, i int, r *relRecord) {
			if e.outcomes.Load() < int64(e.records()/3) {
				return
			}
			once.Do(func() {
				if err := e.f.RemoveNode(2); err != nil {
					e.t.Errorf("RemoveNode: %v", err)
					return
				}
				l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(e.ports[2]))
				if err != nil {
					e.t.Logf("cannot listen on the removed broker's port: %v", err)
					return
				}
				ln = l
				removed.Store(e.now())
				go func() {
					for {
						c, err := l.Accept()
						if err != nil {
							return
						}
						dials.Add(1)
						c.Close()
					}
				}()
				go func() { <-e.done; l.Close() }()
			})
		},
		// In finish, before the read-back: the read-back's client must find
		// the port refusing, not accepting and closing.
		finish: func(e *relEnv) {
			if removed.Load() == 0 {
				return
			}
			defer ln.Close()
			// Dials after the senders finished and the producer settled:
			// half a second of grace, then a 1.5s window.
			grace := time.NewTimer(500 * time.Millisecond) // measurement windows, not waits for an event
			<-grace.C
			before := dials.Load()
			w := time.NewTimer(1500 * time.Millisecond)
			<-w.C
			n := dials.Load() - before
			e.note("%d dials to the removed broker's port in all, %d in a 1.5s window after settling", dials.Load(), n)
			if n > 0 {
				e.violate("request rate", "%d dials to a broker removed from the cluster in 1.5s, want 0", n)
			}
		},
	}
}

// 19 (defect 6). Leaders move every 20 produce requests while SendAsync
// callbacks are slow now and then (a callback that takes 2ms holds its
// broker's callback goroutine): callbacks of one partition must still run
// in offset order.
func relCallbackOrderLeaderMoves() *relScenario {
	var moves atomic.Int64
	return &relScenario{
		name: "19-callback-order-across-leader-moves", keys: 12, perKey: 1000, allAsync: true, window: 64, minAcked: 1,
		onProduce: func(e *relEnv, n int64, _ *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			if n%20 == 0 {
				part := int32(n/20) % e.sc.partitions
				e.f.MoveTopicPartition(e.topic, part, (e.f.LeaderFor(e.topic, part)+1)%int32(e.sc.brokers))
				moves.Add(1)
			}
			return nil, nil, false
		},
		onOutcome: func(e *relEnv, k, i int, r *relRecord) {
			if i%97 == 0 {
				time.Sleep(2 * time.Millisecond) // a slow callback, not synchronization
			}
		},
		after: func(e *relEnv) { e.note("%d leader moves", moves.Load()) },
	}
}

// 20a (defect 8). Broker 0 black-holes produce requests for 2.5s (like a
// SIGSTOPped broker: held, never answered until it resumes); the delivery
// timeout is 1s: records in flight to it must end, outcome unknown, by
// their deadline plus slack.
func relBlackHole() *relScenario {
	f := newRelFault()
	var holding atomic.Bool
	release := make(chan struct{})
	return &relScenario{
		name: "20a-broker-black-hole", keys: 12, perKey: 300, window: 8, minAcked: 0.3, noScale: true,
		delivery: time.Second, opts: []kpush.Option{kpush.WithRequestTimeout(300 * time.Millisecond)},
		onProduce: func(e *relEnv, n int64, _ *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			if holding.Load() && e.f.CurrentNode() == 0 {
				e.c.SleepControl(func() {
					select {
					case <-release:
					case <-e.done:
					}
				})
			}
			return nil, nil, false
		},
		onOutcome: func(e *relEnv, k, i int, r *relRecord) {
			f.maybeStart(e, 0.1, 2500*time.Millisecond, func() { holding.Store(true) }, func() {
				holding.Store(false)
				close(release)
			})
		},
		perRecord: func(e *relEnv, k, i int) {
			if i == e.perKey/2 {
				f.wait(e)
			}
		},
		checkErr: func(e *relEnv, k, i int, err error) error {
			if errors.Is(err, kpush.ErrDeliveryTimeout) {
				return nil
			}
			return err
		},
		finish: func(e *relEnv) { f.wait(e) },
	}
}

// 20b (defect 8). Broker 0's connections go silent for 2.5s (half-open
// TCP: no bytes either way); the delivery timeout is 1s.
func relHalfOpen() *relScenario {
	f := newRelFault()
	return &relScenario{
		name: "20b-half-open-connections", keys: 12, perKey: 300, window: 8, minAcked: 0.3, noScale: true,
		delivery: time.Second, opts: []kpush.Option{kpush.WithRequestTimeout(300 * time.Millisecond)},
		onOutcome: func(e *relEnv, k, i int, r *relRecord) {
			f.maybeStart(e, 0.1, 2500*time.Millisecond, func() { e.net.silence(e.ports[0]) }, func() { e.net.unsilence() })
		},
		perRecord: func(e *relEnv, k, i int) {
			if i == e.perKey/2 {
				f.wait(e)
			}
		},
		checkErr: func(e *relEnv, k, i int, err error) error {
			if errors.Is(err, kpush.ErrDeliveryTimeout) {
				return nil
			}
			return err
		},
		finish: func(e *relEnv) { f.wait(e) },
	}
}

// 21 (defect 10). Every 50th produce request, the broker rejects one
// record of a multi-record batch with INVALID_RECORD and names it
// (KIP-467 record errors; the rest of the request is refused with
// NOT_ENOUGH_REPLICAS, retriable): only the named record may fail.
func relPerRecordError() *relScenario {
	var mu sync.Mutex
	named := map[[2]int]bool{}
	return &relScenario{
		name: "21-per-record-error", keys: 24, perKey: 1500, window: 16, minAcked: 0.9, noScale: true,
		onProduce: func(e *relEnv, n int64, req *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			if n%50 != 0 {
				return nil, nil, false
			}
			resp := rejectProduce(req, kerr.NotEnoughReplicas, 0)
			for ti, rt := range req.Topics {
				for pi, rp := range rt.Partitions {
					d, err := batch.Decode(rp.Records)
					if err != nil || len(d.Records) < 2 {
						continue
					}
					j := len(d.Records) / 2
					k, i, ok := e.parseValue(d.Records[j].Value)
					if !ok {
						continue
					}
					mu.Lock()
					named[[2]int{k, i}] = true
					mu.Unlock()
					sp := &resp.Topics[ti].Partitions[pi]
					msg := "test: this record is invalid"
					sp.ErrorCode = kerr.InvalidRecord.Code
					sp.ErrorMessage = &msg
					sp.ErrorRecords = []kmsg.ProduceResponseTopicPartitionErrorRecord{{RelativeOffset: int32(j), ErrorMessage: &msg}}
					return resp, nil, true
				}
			}
			return resp, nil, true
		},
		checkErr: func(e *relEnv, k, i int, err error) error {
			mu.Lock()
			bad := named[[2]int{k, i}]
			mu.Unlock()
			if !bad {
				e.violate("record failed for another record's error", "record %d/%d: %v, but the broker named another record", k, i, err)
				return nil
			}
			if bad && errors.Is(err, kpush.ErrNotWritten) {
				return nil
			}
			return err
		},
		after: func(e *relEnv) {
			mu.Lock()
			defer mu.Unlock()
			e.note("%d records named invalid", len(named))
		},
	}
}

// 22. A long outage: every broker refuses connections (and drops the open
// ones) for 2.5s, longer than the 1s delivery timeout; then the cluster
// comes back: records sent after that must be acknowledged, and every
// partition with records waiting must send within a second.
func relLongOutage() *relScenario {
	f := newRelFault()
	return &relScenario{
		name: "22-long-outage-then-recovery", keys: 12, perKey: 300, window: 8, minAcked: 0.3, noScale: true,
		stall: 10 * time.Second, stallDefect: "defect1",
		delivery: time.Second,
		opts:     []kpush.Option{kpush.WithRequestTimeout(300 * time.Millisecond), kpush.WithDialTimeout(200 * time.Millisecond)},
		onOutcome: func(e *relEnv, k, i int, r *relRecord) {
			f.maybeStart(e, 0.1, 2500*time.Millisecond, func() {
				e.net.refuse.Store(true)
				e.net.killAll()
			}, func() { e.net.refuse.Store(false) })
		},
		perRecord: func(e *relEnv, k, i int) {
			if i == e.perKey/2 {
				f.wait(e)
			}
		},
		checkErr: func(e *relEnv, k, i int, err error) error {
			r := &e.recs[k][i]
			switch {
			case f.sentAfterFault(r, 0):
				e.violate("partition not sending after the fault ended", "record %d/%d sent %v after the outage ended: %v", k, i, time.Duration(r.start-f.endAt.Load()), err)
				return nil
			case errors.Is(err, kpush.ErrDeliveryTimeout):
				return nil
			}
			return err
		},
		finish: func(e *relEnv) { f.wait(e) },
	}
}

// 23 (defect 11). Every 400th produce request is answered
// UNKNOWN_PRODUCER_ID on every partition (the broker lost the producer's
// state, as after producer.id.expiration.ms or DeleteRecords), and the
// request after it is cut before it is applied: batches pipelined behind
// the failed ones must still land in send order.
func relLostProducerState() *relScenario {
	var lost atomic.Int64
	return &relScenario{
		name: "23-broker-loses-producer-state", keys: 24, perKey: 1500, window: 16, minAcked: 1, noScale: true,
		onProduce: func(e *relEnv, n int64, req *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			switch n % 400 {
			case 0:
				lost.Add(1)
				return rejectProduce(req, kerr.UnknownProducerID, 0), nil, true
			case 1:
				return nil, errRelCutBefore, true
			}
			return nil, nil, false
		},
		after: func(e *relEnv) { e.note("%d UNKNOWN_PRODUCER_ID answers", lost.Load()) },
	}
}
