package kpush_test

// Reliability scenarios (issue 4): broker faults, bad timing and producer
// misuse under load, each checked against the same model (see
// reliability_model_test.go): every record gets exactly one outcome; an
// acknowledged record is in the log exactly once, at the reported
// partition and offset; a record reported not written is absent; a record
// with an unknown outcome is present at most once; per key, records are in
// send order. Each scenario logs one summary line.
//
//	go test -run TestReliability -v .                 # ≥ 100,000 records per scenario
//	go test -run TestReliability -v -kpush.long .     # ≥ 1,000,000 records per scenario
//	go test -race -run TestReliability .              # ≥ 10,000 records per scenario

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
)

var relLong = flag.Bool("kpush.long", false, "reliability scenarios: send at least 1,000,000 records each (default 100,000)")

func TestReliability(t *testing.T) {
	for _, mk := range append([]func() *relScenario{
		relLeaderMoves,
		relBrokerBounce,
		relCutBeforeApply,
		relCutAfterApply,
		relDelayedResponse,
		relRetriableErrors,
		relRetryAfterSuccessorsAcked,
		relEpochBump,
		relThrottle,
		relMetadataFlaps,
		relTopicCreatedLater,
		relSlowBroker,
		relBufferFullBlocking,
		relBufferFullFailFast,
		relCancelStorms,
		relCloseGraceful,
		relCloseAbrupt,
		relNonRetriable,
		relRejectedPartitionBacksOff,
		relUnreachable,
		relClusterClosed,
	}, relDefectScenarios...) {
		sc := mk()
		t.Run(sc.name, func(t *testing.T) { runReliability(t, sc) })
	}
}

var relNoop = context.CancelFunc(func() {})

// 1. The leader of some partition moves to another broker every 25 produce
// requests; every 400 requests all leaders are reshuffled.
func relLeaderMoves() *relScenario {
	var moves, shuffles atomic.Int64
	return &relScenario{
		name: "01-leader-moves", keys: 24, perKey: 400, window: 16, minAcked: 1,
		onProduce: func(e *relEnv, n int64, _ *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			switch {
			case n%400 == 0:
				e.f.ShufflePartitionLeaders()
				shuffles.Add(1)
			case n%25 == 0:
				part := int32(n/25) % e.sc.partitions
				e.f.MoveTopicPartition(e.topic, part, (e.f.LeaderFor(e.topic, part)+1)%int32(e.sc.brokers))
				moves.Add(1)
			}
			return nil, nil, false
		},
		after: func(e *relEnv) {
			e.note("%d leader moves, %d reshuffles", moves.Load(), shuffles.Load())
			if moves.Load() == 0 {
				e.t.Error("no leader moved")
			}
		},
	}
}

// 2. Every 150 produce requests, the broker that received the request is
// removed from the cluster (its listener and every connection to it
// closed, its partitions handed to the others); 60 requests later it comes
// back with the same ID and port and takes leaderships again.
func relBrokerBounce() *relScenario {
	var mu sync.Mutex
	down, nextAt, bounces, led := int32(-1), int64(100), 0, 0
	var errs []string
	readd := func(e *relEnv) {
		if _, _, err := e.f.AddNode(down, e.ports[down]); err != nil {
			errs = append(errs, fmt.Sprintf("AddNode(%d): %v", down, err))
		}
		down = -1
	}
	return &relScenario{
		name: "02-broker-removed-and-readded", keys: 24, perKey: 400, window: 16, minAcked: 1,
		onProduce: func(e *relEnv, n int64, _ *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			mu.Lock()
			defer mu.Unlock()
			if n < nextAt {
				return nil, nil, false
			}
			if down >= 0 {
				readd(e)
				nextAt = n + 150
				return nil, nil, false
			}
			node := e.f.CurrentNode()
			for p := range e.sc.partitions {
				if e.f.LeaderFor(e.topic, p) == node {
					led++
				}
			}
			if err := e.f.RemoveNode(node); err != nil {
				errs = append(errs, fmt.Sprintf("RemoveNode(%d): %v", node, err))
				nextAt = n + 150
				return nil, nil, false
			}
			e.net.kill(e.ports[node])
			down, nextAt = node, n+60
			bounces++
			return nil, errRelCutBefore, true
		},
		finish: func(e *relEnv) {
			mu.Lock()
			defer mu.Unlock()
			if down >= 0 {
				readd(e)
			}
		},
		after: func(e *relEnv) {
			mu.Lock()
			defer mu.Unlock()
			e.note("%d brokers removed and re-added (leading %d partitions in all)", bounces, led)
			for _, err := range errs {
				e.t.Error(err)
			}
			if bounces == 0 {
				e.t.Error("no broker was removed")
			}
		},
	}
}

// 3a. The broker closes the connection instead of handling every 37th
// produce request: nothing of it was applied.
func relCutBeforeApply() *relScenario {
	var cuts atomic.Int64
	return &relScenario{
		name: "03a-connection-cut-before-apply", keys: 24, perKey: 400, window: 16, minAcked: 1,
		onProduce: func(e *relEnv, n int64, _ *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			if n%37 == 0 {
				cuts.Add(1)
				return nil, errRelCutBefore, true
			}
			return nil, nil, false
		},
		after: func(e *relEnv) { e.note("%d connections cut before apply", cuts.Load()) },
	}
}

// 3b. The broker applies the request, then the connection closes before
// the response is written (every 41st produce response dropped); and every
// 43rd request is answered NOT_ENOUGH_REPLICAS_AFTER_APPEND by kfake, which
// appends first.
func relCutAfterApply() *relScenario {
	var cuts, responses, appendErrs atomic.Int64
	var armed atomic.Pointer[kmsg.ProduceRequest]
	return &relScenario{
		name: "03b-connection-cut-after-apply", keys: 24, perKey: 400, window: 16, minAcked: 1, retriedWrites: true,
		setup: func(e *relEnv) {
			e.f.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: e.topic, Err: kerr.NotEnoughReplicasAfterAppend, Count: -1,
				When: func(r kmsg.Request) bool { pr, ok := r.(*kmsg.ProduceRequest); return ok && pr == armed.Load() }})
		},
		onProduce: func(e *relEnv, n int64, req *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			if n%43 == 0 {
				armed.Store(req)
				appendErrs.Add(1)
			}
			return nil, nil, false
		},
		onResp: func(e *relEnv, c *relConn, key, version int16, frame []byte) ([]byte, bool) {
			if key == int16(kmsg.Produce) && responses.Add(1)%41 == 0 {
				cuts.Add(1)
				return nil, true
			}
			return nil, false
		},
		after: func(e *relEnv) {
			e.note("%d responses dropped after apply (connection closed), %d NOT_ENOUGH_REPLICAS_AFTER_APPEND", cuts.Load(), appendErrs.Load())
		},
	}
}

// 4. Some produce requests are held by the broker until kpush gives up on
// them (request timeout) and connects again; the broker then applies the
// held request, answering into the dead connection, so kpush's retry is a
// duplicate the broker must recognise. kpush's wait is the request timeout
// plus 5s (the broker is expected to answer first), so each hold costs
// ≈5.3s; at most two (ten with -kpush.long), on different brokers at once.
func relDelayedResponse() *relScenario {
	const rt = 250 * time.Millisecond
	maxHolds := int64(2)
	if *relLong {
		maxHolds = 10
	}
	var mu sync.Mutex
	held := map[int32]bool{}
	var holds, gaveUp, capped atomic.Int64
	var durs []time.Duration
	return &relScenario{
		name: "04-response-delayed-past-request-timeout", keys: 24, perKey: 300, window: 16, minAcked: 1,
		opts: []kpush.Option{kpush.WithRequestTimeout(rt)},
		onProduce: func(e *relEnv, n int64, _ *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			if n%300 != 0 || holds.Load() >= maxHolds {
				return nil, nil, false
			}
			node := e.f.CurrentNode()
			mu.Lock()
			if held[node] {
				mu.Unlock()
				return nil, nil, false
			}
			held[node] = true
			mu.Unlock()
			reconnected := e.net.nextAccept(e.ports[node])
			holds.Add(1)
			start := time.Now()
			e.c.SleepControl(func() {
				capT := time.NewTimer(20 * time.Second)
				defer capT.Stop()
				select {
				case <-reconnected: // kpush gave up on the connection and dialed again
					gaveUp.Add(1)
				case <-e.done:
				case <-capT.C:
					capped.Add(1)
				}
				mu.Lock()
				held[node] = false
				durs = append(durs, time.Since(start).Round(time.Millisecond))
				mu.Unlock()
			})
			return nil, nil, false // applied now; the answer goes nowhere
		},
		after: func(e *relEnv) {
			mu.Lock()
			defer mu.Unlock()
			e.note("%d requests held until kpush reconnected (%v), then applied", holds.Load(), durs)
			if gaveUp.Load() == 0 {
				e.t.Error("kpush never gave up on a held request")
			}
			if capped.Load() > 0 {
				e.t.Errorf("kpush did not time out %d held requests within 20s (request timeout %v)", capped.Load(), rt)
			}
		},
	}
}

// 5. Retriable partition errors on every 13th produce request, rotating
// NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS,
// LEADER_NOT_AVAILABLE and NOT_ENOUGH_REPLICAS_AFTER_APPEND; alternately
// through kfake.Fault (REQUEST_TIMED_OUT and ..._AFTER_APPEND append first,
// as a real broker may) and as a control's reply (nothing appended).
func relRetriableErrors() *relScenario {
	codes := []*kerr.Error{kerr.NotLeaderForPartition, kerr.RequestTimedOut, kerr.NotEnoughReplicas, kerr.LeaderNotAvailable, kerr.NotEnoughReplicasAfterAppend}
	var armed atomic.Pointer[kmsg.ProduceRequest]
	var armedCode atomic.Int32
	var viaFault, viaReply atomic.Int64
	return &relScenario{
		name: "05-retriable-errors", keys: 24, perKey: 400, window: 16, minAcked: 1, retriedWrites: true,
		setup: func(e *relEnv) {
			for _, code := range codes {
				e.f.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: e.topic, Err: code, Count: -1,
					When: func(r kmsg.Request) bool {
						pr, ok := r.(*kmsg.ProduceRequest)
						return ok && pr == armed.Load() && int16(armedCode.Load()) == code.Code
					}})
			}
		},
		onProduce: func(e *relEnv, n int64, req *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			if n%13 != 0 {
				return nil, nil, false
			}
			j := n / 13
			code := codes[j%int64(len(codes))]
			if (j/int64(len(codes)))%2 == 0 {
				armedCode.Store(int32(code.Code))
				armed.Store(req)
				viaFault.Add(1)
				return nil, nil, false
			}
			viaReply.Add(1)
			return rejectProduce(req, code, 0), nil, true
		},
		// Every error is unexpected here, except ErrSequenceReset, which the
		// runner tolerates and counts: engine bug reproduced by 05b.
		checkErr: func(e *relEnv, k, i int, err error) error { return err },
		after: func(e *relEnv) {
			e.note("%d errors via kfake.Fault, %d via reply", viaFault.Load(), viaReply.Load())
		},
	}
}

// 05b. A batch is appended by the broker but answered REQUEST_TIMED_OUT
// (kfake.Fault appends first); the batches pipelined behind it are appended
// and acknowledged. Its retry is then refused (NOT_ENOUGH_REPLICAS, before
// the broker's duplicate check) while kpush keeps pipelining new batches
// behind it, until the broker's five-batch duplicate window no longer holds
// it: the next retry gets OUT_OF_ORDER_SEQUENCE_NUMBER, kpush moves to a new
// producer ID and reports the batch as ErrSequenceReset (outcome unknown).
// That is the honest answer: the later acknowledgements do not prove it was
// written (a broker accepts any sequence as a producer's first batch on a
// partition, see scenario 06), so the model only requires those records to
// be present at most once.
func relRetryAfterSuccessorsAcked() *relScenario {
	var mu sync.Mutex
	var armed atomic.Pointer[kmsg.ProduceRequest]
	target, rejected := int32(-1), 0
	var inits atomic.Int64
	var pipelined atomic.Bool
	return &relScenario{
		name: "05b-retry-of-written-batch-after-successors-acked", brokers: 1, partitions: 1,
		keys: 8, perKey: 1000, allAsync: true, window: 128, minAcked: 1,
		opts: []kpush.Option{kpush.WithMaxBatchBytes(2048)}, // many small batches
		setup: func(e *relEnv) {
			e.f.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: e.topic, Err: kerr.RequestTimedOut, Count: -1,
				When: func(r kmsg.Request) bool { pr, ok := r.(*kmsg.ProduceRequest); return ok && pr == armed.Load() }})
			e.f.ControlKey(int16(kmsg.InitProducerID), func(kmsg.Request) (kmsg.Response, error, bool) {
				e.f.KeepControl()
				inits.Add(1)
				return nil, nil, false
			})
		},
		onProduce: func(e *relEnv, n int64, req *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			mu.Lock()
			defer mu.Unlock()
			for _, t := range req.Topics {
				for _, p := range t.Partitions {
					var b kmsg.RecordBatch
					if b.ReadFrom(p.Records) != nil {
						continue
					}
					switch {
					case target < 0 && n >= 10:
						target = b.FirstSequence
						armed.Store(req) // appended, answered REQUEST_TIMED_OUT
						// Answer once four successors are in flight behind it
						// (bounded wait, checked every millisecond).
						mu.Unlock()
						e.c.SleepControl(func() {
							tick := time.NewTicker(time.Millisecond)
							defer tick.Stop()
							capT := time.NewTimer(2 * time.Second)
							defer capT.Stop()
							for e.p.Stats().InflightRequests < 5 {
								select {
								case <-tick.C:
								case <-capT.C:
									return
								case <-e.done:
									return
								}
							}
							pipelined.Store(true)
						})
						mu.Lock()
					case b.FirstSequence == target && rejected < 8:
						rejected++
						return rejectProduce(req, kerr.NotEnoughReplicas, 0), nil, true
					}
				}
			}
			return nil, nil, false
		},
		checkErr: func(e *relEnv, k, i int, err error) error { return err },
		after: func(e *relEnv) {
			mu.Lock()
			defer mu.Unlock()
			e.note("batch at sequence %d appended and answered REQUEST_TIMED_OUT (successors in flight: %v), its retry refused %d times; %d InitProducerID requests", target, pipelined.Load(), rejected, inits.Load())
			if !pipelined.Load() {
				e.t.Error("never had five requests in flight")
			}
		},
	}
}

// 6. OUT_OF_ORDER_SEQUENCE_NUMBER and UNKNOWN_PRODUCER_ID (alternately) on
// every 97th produce request: the KIP-360 epoch bump path.
func relEpochBump() *relScenario {
	codes := []*kerr.Error{kerr.OutOfOrderSequenceNumber, kerr.UnknownProducerID}
	var injected, inits atomic.Int64
	return &relScenario{
		name: "06-epoch-bump", keys: 24, perKey: 400, window: 16, minAcked: 0.95,
		setup: func(e *relEnv) {
			e.f.ControlKey(int16(kmsg.InitProducerID), func(kmsg.Request) (kmsg.Response, error, bool) {
				e.f.KeepControl()
				inits.Add(1)
				return nil, nil, false
			})
		},
		onProduce: func(e *relEnv, n int64, req *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			if n%97 != 0 {
				return nil, nil, false
			}
			injected.Add(1)
			return rejectProduce(req, codes[(n/97)%2], 0), nil, true
		},
		checkErr: func(e *relEnv, k, i int, err error) error {
			if errors.Is(err, kpush.ErrSequenceReset) && errors.Is(err, kpush.ErrOutcomeUnknown) {
				return nil
			}
			return err
		},
		after: func(e *relEnv) {
			e.note("%d sequence errors injected, %d InitProducerID requests", injected.Load(), inits.Load())
			if inits.Load() < 2 {
				e.t.Errorf("%d InitProducerID requests: no epoch bump", inits.Load())
			}
		},
	}
}

// 7. Every 40th produce response (successful ones included) carries a
// throttle time of 15ms, and every 200th request is answered
// NOT_ENOUGH_REPLICAS with a throttle time. kpush must hold back (KIP-219):
// after each throttled response it writes nothing more on that connection
// for 15ms, so in the 15ms after the broker answered, the connection
// carries at most the MaxInflight-1 requests written before kpush read the
// answer.
func relThrottle() *relScenario {
	const (
		throttle    = 15 * time.Millisecond
		maxInflight = 5 // kpush's default
	)
	type event struct {
		c  *relConn
		at time.Time
	}
	var (
		responses, injected atomic.Int64
		mu                  sync.Mutex
		events              []event
	)
	return &relScenario{
		name: "07-throttled-responses", keys: 24, perKey: 300, window: 16, minAcked: 1,
		setup: func(e *relEnv) { e.net.recordProduce.Store(true) },
		onProduce: func(e *relEnv, n int64, req *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			if n%200 == 0 {
				injected.Add(1)
				return rejectProduce(req, kerr.NotEnoughReplicas, int32(throttle/time.Millisecond)), nil, true
			}
			return nil, nil, false
		},
		onResp: func(e *relEnv, c *relConn, key, version int16, frame []byte) ([]byte, bool) {
			if key != int16(kmsg.Produce) || responses.Add(1)%40 != 0 {
				return nil, false
			}
			changed := false
			out := rewriteResponse(key, version, frame, func(r kmsg.Response) {
				if pr := r.(*kmsg.ProduceResponse); pr.ThrottleMillis == 0 {
					pr.ThrottleMillis, changed = int32(throttle/time.Millisecond), true
				}
			})
			if out != nil && changed {
				injected.Add(1)
				mu.Lock()
				events = append(events, event{c, time.Now()}) // before the answer is written
				mu.Unlock()
			}
			return out, false
		},
		after: func(e *relEnv) {
			got := e.p.Stats().Throttles
			e.note("%d throttled responses sent, %d counted by kpush", injected.Load(), got)
			if got != injected.Load() || got == 0 {
				e.t.Errorf("kpush counted %d throttled responses, %d were sent", got, injected.Load())
			}
			mu.Lock()
			defer mu.Unlock()
			worst, bad := 0, 0
			for _, ev := range events {
				n := ev.c.produceWithin(ev.at, throttle)
				worst = max(worst, n)
				if n > maxInflight-1 {
					bad++
				}
			}
			e.note("at most %d requests within %v of a throttled answer on its connection", worst, throttle)
			if bad > 0 {
				e.violate("throttle not honoured", "%d of %d throttled answers were followed by more than %d produce requests on their connection within %v (worst %d)", bad, len(events), maxInflight-1, throttle, worst)
			}
		},
	}
}
