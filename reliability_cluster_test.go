package kpush_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
)

// Reliability scenarios 08–10: metadata, topic creation, slow brokers.

// 8. Metadata that flaps: in runs of three responses, one partition
// (rotating with traffic) has no leader (LEADER_NOT_AVAILABLE); every 7th
// response fails the whole topic with LEADER_NOT_AVAILABLE; every 11th
// omits that partition's leader from the broker list. Leaders also move
// every 40 produce requests so that kpush has to refresh.
func relMetadataFlaps() *relScenario {
	var metas, flapped, moves atomic.Int64
	return &relScenario{
		name: "08-metadata-flaps", keys: 24, perKey: 400, window: 16, minAcked: 1,
		onProduce: func(e *relEnv, n int64, _ *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			if n%40 == 0 {
				part := int32(n/40) % e.sc.partitions
				e.f.MoveTopicPartition(e.topic, part, (e.f.LeaderFor(e.topic, part)+1)%int32(e.sc.brokers))
				moves.Add(1)
			}
			return nil, nil, false
		},
		onResp: func(e *relEnv, c *relConn, key, version int16, frame []byte) ([]byte, bool) {
			if key != int16(kmsg.Metadata) {
				return nil, false
			}
			m := metas.Add(1)
			const (
				none = iota
				topicErr
				noLeader
				missingBroker
			)
			mode := none
			switch {
			case m%7 == 0:
				mode = topicErr
			case (m/3)%2 == 1:
				mode = noLeader
			case m%11 == 5:
				mode = missingBroker
			}
			if mode == none {
				return nil, false
			}
			fp := int32(e.produceReqs.Load()/100) % e.sc.partitions
			return rewriteResponse(key, version, frame, func(r kmsg.Response) {
				mr := r.(*kmsg.MetadataResponse)
				for ti := range mr.Topics {
					t := &mr.Topics[ti]
					if t.Topic == nil || *t.Topic != e.topic {
						continue
					}
					flapped.Add(1)
					switch mode {
					case topicErr:
						t.ErrorCode = kerr.LeaderNotAvailable.Code
						t.Partitions = nil
					case noLeader:
						for pi := range t.Partitions {
							if p := &t.Partitions[pi]; p.Partition == fp {
								p.Leader, p.ErrorCode = -1, kerr.LeaderNotAvailable.Code
							}
						}
					case missingBroker:
						for pi := range t.Partitions {
							if p := &t.Partitions[pi]; p.Partition == fp {
								leader := p.Leader
								bs := mr.Brokers[:0]
								for _, b := range mr.Brokers {
									if b.NodeID != leader {
										bs = append(bs, b)
									}
								}
								mr.Brokers = bs
							}
						}
					}
				}
			}), false
		},
		after: func(e *relEnv) {
			e.note("%d metadata responses, %d flapped, %d leader moves", metas.Load(), flapped.Load(), moves.Load())
			if flapped.Load() == 0 {
				e.t.Error("no metadata response flapped")
			}
		},
	}
}

// 9. The topic does not exist (auto-creation off) when sending starts;
// once 300 records have failed with ErrUnknownTopic, it is created. Records
// fail ErrUnknownTopic (not written, absent) or succeed; every record sent
// after the topic exists succeeds.
func relTopicCreatedLater() *relScenario {
	const threshold = 300
	var unknownTopic, createdAt atomic.Int64
	var once sync.Once
	created := make(chan struct{})
	var createErr error
	return &relScenario{
		name: "09-topic-created-later", noTopic: true, keys: 20, perKey: 400, window: 8, minAcked: 0.5,
		opts: []kpush.Option{kpush.WithRetryBackoff(5 * time.Millisecond)},
		onOutcome: func(e *relEnv, k, i int, r *relRecord) {
			if r.outcome != relNotWritten || !errors.Is(r.err, kpush.ErrUnknownTopic) {
				return
			}
			if unknownTopic.Add(1) >= threshold {
				once.Do(func() {
					go func() {
						createErr = e.c.CreateTopic(e.ctx, e.topic, e.sc.partitions)
						createdAt.Store(e.now())
						close(created)
					}()
				})
			}
		},
		checkErr: func(e *relEnv, k, i int, err error) error {
			if errors.Is(err, kpush.ErrUnknownTopic) && errors.Is(err, kpush.ErrNotWritten) {
				return nil
			}
			return err
		},
		finish: func(e *relEnv) {
			select {
			case <-created:
			case <-time.After(20 * time.Second):
				e.t.Fatal("topic never created")
			}
		},
		after: func(e *relEnv) {
			if createErr != nil {
				e.t.Fatal(createErr)
			}
			at := createdAt.Load()
			late := 0
			for k := range e.keys {
				for i := range e.perKey {
					if r := &e.recs[k][i]; r.start > at && r.outcome != relAcked {
						late++
						if late <= 3 {
							e.t.Errorf("record %d/%d sent %v after the topic was created failed: %v", k, i, time.Duration(r.start-at), r.err)
						}
					}
				}
			}
			e.note("%d ErrUnknownTopic before the topic was created at %v", unknownTopic.Load(), time.Duration(at).Round(time.Millisecond))
		},
	}
}

// 10. One slow broker among fast ones: three times, broker 0 (leading
// partitions 0 and 3 of 6) holds its produce requests until the other brokers'
// partitions have completed 10% of their records (or all of them). If the
// slow broker blocked the others, the hold would never end and the run
// would stall.
func relSlowBroker() *relScenario {
	var mu sync.Mutex
	var (
		slowNode  int32
		slowParts = map[int32]bool{}
		keyPart   []atomic.Int32 // -1 until known
		keyDone   []atomic.Int32
		holdWant  bool
		holding   bool
		release   chan struct{}
		holds     int
		threshold int
		otherAck  int
		slowAck   int
		slowTotal int
		released  int
		marks     = []float64{0.1, 0.4, 0.7}
	)
	releaseLocked := func() {
		if holding {
			holding = false
			close(release)
		}
	}
	return &relScenario{
		name: "10-slow-broker", keys: 24, perKey: 400, window: 16, minAcked: 1,
		opts: []kpush.Option{kpush.WithRequestTimeout(10 * time.Second)},
		setup: func(e *relEnv) {
			// Leaders round robin: the slow node 0 leads partitions 0 and 3.
			for p := range e.sc.partitions {
				if err := e.f.MoveTopicPartition(e.topic, p, p%int32(e.sc.brokers)); err != nil {
					e.t.Fatal(err)
				}
			}
			slowNode = 0
			for p := range e.sc.partitions {
				if e.f.LeaderFor(e.topic, p) == slowNode {
					slowParts[p] = true
				}
			}
			keyPart = make([]atomic.Int32, e.keys)
			keyDone = make([]atomic.Int32, e.keys)
			for k := range keyPart {
				keyPart[k].Store(-1)
			}
		},
		onProduce: func(e *relEnv, n int64, _ *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			if e.f.CurrentNode() != slowNode {
				return nil, nil, false
			}
			mu.Lock()
			if !holdWant || holding {
				mu.Unlock()
				return nil, nil, false
			}
			holdWant = false
			otherTotal, otherLeft := 0, 0
			for k := range keyPart {
				if !slowParts[keyPart[k].Load()] {
					otherTotal += e.perKey
					otherLeft += e.perKey - int(keyDone[k].Load())
				}
			}
			threshold = min(otherTotal/10, otherLeft)
			if threshold == 0 {
				mu.Unlock()
				return nil, nil, false
			}
			holding, otherAck = true, 0
			release = make(chan struct{})
			rel := release
			holds++
			mu.Unlock()
			e.c.SleepControl(func() {
				select {
				case <-rel:
				case <-e.done:
				}
			})
			return nil, nil, false
		},
		onOutcome: func(e *relEnv, k, i int, r *relRecord) {
			if r.outcome == relAcked {
				keyPart[k].CompareAndSwap(-1, r.loc.part)
			}
			keyDone[k].Add(1)
			mu.Lock()
			defer mu.Unlock()
			if holding {
				if slowParts[keyPart[k].Load()] {
					slowAck++
				} else if otherAck++; otherAck >= threshold {
					released++
					releaseLocked()
				}
				return
			}
			if holds < len(marks) && !holdWant && float64(e.outcomes.Load()) >= marks[holds]*float64(e.records()) {
				for k := range keyPart {
					if keyPart[k].Load() < 0 {
						return // every key's partition must be known first
					}
				}
				holdWant = true
			}
		},
		finish: func(e *relEnv) {
			mu.Lock()
			defer mu.Unlock()
			releaseLocked()
			for k := range keyPart {
				if slowParts[keyPart[k].Load()] {
					slowTotal++
				}
			}
		},
		state: func() string {
			mu.Lock()
			defer mu.Unlock()
			return fmt.Sprintf("slow node %d (partitions %v), holding=%v, holds=%d, other partitions acked during this hold %d of %d needed",
				slowNode, slowParts, holding, holds, otherAck, threshold)
		},
		after: func(e *relEnv) {
			mu.Lock()
			defer mu.Unlock()
			e.note("node %d slow (leads %d partitions, %d keys): %d holds, each released by other partitions' progress (%d); slow partitions acked during holds: %d (already in flight)",
				slowNode, len(slowParts), slowTotal, holds, released, slowAck)
			if holds == 0 {
				e.t.Error("the slow broker never held a request")
			}
			if released != holds {
				e.t.Errorf("%d of %d holds ended by the other partitions' progress", released, holds)
			}
		},
	}
}
