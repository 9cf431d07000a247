package kpush_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
)

// Reliability scenarios 11–15: buffer limits, cancellation, Close,
// non-retriable errors, delivery timeouts.

// 11a. Buffer full, blocking mode: a 16 KiB buffer, 16 keys with 256
// asynchronous records outstanding each, connections cut every 61st
// request. BytesBuffered, sampled every 8th call and outcome, never exceeds
// the limit.
func relBufferFullBlocking() *relScenario {
	const limit = 16 << 10
	var maxSeen, samples atomic.Int64
	sample := func(e *relEnv) {
		b := e.p.Stats().BytesBuffered
		samples.Add(1)
		for {
			m := maxSeen.Load()
			if b <= m || maxSeen.CompareAndSwap(m, b) {
				break
			}
		}
		if b > limit {
			e.violate("memory bound", "BytesBuffered %d above the limit %d", b, limit)
		}
	}
	return &relScenario{
		name: "11a-buffer-full-blocking", keys: 16, perKey: 600, allAsync: true, window: 256, minAcked: 1,
		maxBufBytes: limit,
		onProduce: func(e *relEnv, n int64, _ *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			if n%61 == 0 {
				return nil, errRelCutBefore, true
			}
			return nil, nil, false
		},
		perRecord: func(e *relEnv, k, i int) {
			if i%8 == 0 {
				sample(e)
			}
		},
		onOutcome: func(e *relEnv, k, i int, r *relRecord) {
			if i%8 == 4 {
				sample(e)
			}
		},
		after: func(e *relEnv) {
			e.note("BytesBuffered max %d of %d (%d samples)", maxSeen.Load(), limit, samples.Load())
			if maxSeen.Load() < limit/4 {
				e.t.Errorf("buffer never filled (max %d of %d): the bound was not exercised", maxSeen.Load(), limit)
			}
		},
	}
}

// 11b. Buffer full, fail-fast mode: only ErrBufferFull (not written) errors.
func relBufferFullFailFast() *relScenario {
	const limit = 16 << 10
	var full, maxSeen atomic.Int64
	return &relScenario{
		name: "11b-buffer-full-fail-fast", keys: 16, perKey: 600, allAsync: true, window: 512, minAcked: 0.01,
		maxBufBytes: limit, opts: []kpush.Option{kpush.WithFailFastWhenFull(true)},
		checkErr: func(e *relEnv, k, i int, err error) error {
			if errors.Is(err, kpush.ErrBufferFull) && errors.Is(err, kpush.ErrNotWritten) {
				full.Add(1)
				return nil
			}
			return err
		},
		perRecord: func(e *relEnv, k, i int) {
			if i%8 == 0 {
				b := e.p.Stats().BytesBuffered
				for m := maxSeen.Load(); b > m && !maxSeen.CompareAndSwap(m, b); m = maxSeen.Load() {
				}
				if b > limit {
					e.violate("memory bound", "BytesBuffered %d above the limit %d", b, limit)
				}
			}
		},
		after: func(e *relEnv) {
			e.note("%d ErrBufferFull; BytesBuffered max %d of %d", full.Load(), maxSeen.Load(), limit)
			if full.Load() == 0 {
				e.t.Error("the buffer never filled")
			}
		},
	}
}

// 12. Cancellation storms: half the senders (synchronous) give every
// record a context that is canceled at a random moment (one in three, after
// 0–2ms) and, every 250th of their records, all their contexts at once;
// connections are cut every 53rd request. The other half must see no error.
func relCancelStorms() *relScenario {
	type storm struct {
		ctx    context.Context
		cancel context.CancelFunc
	}
	var cur atomic.Pointer[storm]
	var sends, storms atomic.Int64
	newStorm := func(e *relEnv) *storm {
		ctx, cancel := context.WithCancel(e.ctx)
		return &storm{ctx, cancel}
	}
	return &relScenario{
		name: "12-ctx-cancel-storms", keys: 32, perKey: 300, window: 8, minAcked: 0.5,
		setup: func(e *relEnv) { cur.Store(newStorm(e)) },
		ctxFor: func(e *relEnv, k, i int, rng *rand.Rand) (context.Context, context.CancelFunc) {
			if k%2 == 1 {
				return e.ctx, relNoop
			}
			if sends.Add(1)%250 == 0 {
				cur.Swap(newStorm(e)).cancel()
				storms.Add(1)
			}
			ctx, cancel := context.WithCancel(cur.Load().ctx)
			if rng.IntN(3) == 0 {
				tm := time.AfterFunc(time.Duration(rng.IntN(2000))*time.Microsecond, cancel)
				return ctx, func() { tm.Stop(); cancel() }
			}
			return ctx, cancel
		},
		onProduce: func(e *relEnv, n int64, _ *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			if n%53 == 0 {
				return nil, errRelCutBefore, true
			}
			return nil, nil, false
		},
		checkErr: func(e *relEnv, k, i int, err error) error {
			if k%2 == 0 && errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
		finish: func(e *relEnv) { cur.Load().cancel() },
		after: func(e *relEnv) {
			_, nw, unk := e.counts()
			e.note("%d storms", storms.Load())
			if nw == 0 || unk == 0 {
				e.t.Errorf("cancellations: %d not written, %d unknown; want both paths exercised", nw, unk)
			}
		},
	}
}

// relCloser closes the producer once a share of outcomes has arrived and
// checks that Close returns and leaves no goroutine behind.
type relCloser struct {
	once     sync.Once
	done     chan struct{}
	err      error
	took     time.Duration
	startAt  atomic.Int64
	closedN  atomic.Int64
	unknownN atomic.Int64
}

func (c *relCloser) start(e *relEnv, ctxTimeout time.Duration, before func()) {
	c.once.Do(func() {
		c.startAt.Store(e.now())
		go func() {
			defer close(c.done)
			if before != nil {
				before()
			}
			ctx, cancel := context.WithTimeout(context.Background(), ctxTimeout)
			defer cancel()
			start := time.Now()
			c.err = e.p.Close(ctx)
			c.took = time.Since(start)
		}()
	})
}

func (c *relCloser) wait(e *relEnv) {
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		e.t.Fatal("Close did not return within 30s")
	}
}

// 13a. Close (with a generous ctx) when 40% of the outcomes are in, while
// connections are cut every 71st request: Close flushes what was buffered;
// later records fail ErrClosed (not written); no goroutine is left.
func relCloseGraceful() *relScenario {
	c := &relCloser{done: make(chan struct{})}
	return &relScenario{
		name: "13a-close-under-load-graceful", keys: 24, perKey: 400, window: 32, minAcked: 0.3,
		onProduce: func(e *relEnv, n int64, _ *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			if n%71 == 0 {
				return nil, errRelCutBefore, true
			}
			return nil, nil, false
		},
		onOutcome: func(e *relEnv, k, i int, r *relRecord) {
			if e.outcomes.Load() >= int64(e.records()*2/5) {
				c.start(e, 20*time.Second, nil)
			}
		},
		checkErr: func(e *relEnv, k, i int, err error) error {
			if errors.Is(err, kpush.ErrClosed) && errors.Is(err, kpush.ErrNotWritten) {
				c.closedN.Add(1)
				return nil
			}
			return err
		},
		finish: func(e *relEnv) {
			c.wait(e)
			if c.err != nil {
				e.t.Errorf("Close: %v", c.err)
			}
			checkNoKpushGoroutines(e.t, "after Close")
		},
		after: func(e *relEnv) {
			e.note("Close took %v; %d records ErrClosed", c.took.Round(time.Millisecond), c.closedN.Load())
			if c.closedN.Load() == 0 {
				e.t.Error("no record was refused after Close")
			}
		},
	}
}

// 13b. Close with a 50ms ctx when 40% of the outcomes are in (once the
// first produce request after that is held), while the brokers hold every
// produce request: buffered records fail ErrClosed (not
// written), in-flight ones are unknown; the held requests are applied after
// Close returned (unknown ⇒ at most once); no goroutine is left.
func relCloseAbrupt() *relScenario {
	c := &relCloser{done: make(chan struct{})}
	var hold atomic.Bool
	released := make(chan struct{})
	var held atomic.Int64
	return &relScenario{
		name: "13b-close-under-load-abrupt", keys: 24, perKey: 400, window: 32, minAcked: 0.3,
		onProduce: func(e *relEnv, n int64, _ *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
			if hold.Load() {
				held.Add(1)
				// Close starts once a request is held, not at the outcome
				// that set hold: the senders could otherwise lose the race
				// to Close's closed flag (a loaded machine), every record
				// sent before hold be answered, and Close rightly return
				// nil within its ctx (2 in 200 runs under two busy loops).
				c.start(e, 50*time.Millisecond, nil)
				e.c.SleepControl(func() {
					select {
					case <-released:
					case <-e.done:
					}
				})
			}
			return nil, nil, false
		},
		onOutcome: func(e *relEnv, k, i int, r *relRecord) {
			if e.outcomes.Load() >= int64(e.records()*2/5) {
				hold.Store(true)
			}
		},
		checkErr: func(e *relEnv, k, i int, err error) error {
			switch {
			case errors.Is(err, kpush.ErrClosed) && errors.Is(err, kpush.ErrNotWritten):
				c.closedN.Add(1)
				return nil
			case errors.Is(err, kpush.ErrOutcomeUnknown):
				c.unknownN.Add(1)
				return nil
			}
			return err
		},
		finish: func(e *relEnv) {
			c.wait(e)
			close(released)
			if !errors.Is(c.err, context.DeadlineExceeded) {
				e.t.Errorf("Close: %v, want the ctx's deadline", c.err)
			}
			checkNoKpushGoroutines(e.t, "after Close")
		},
		after: func(e *relEnv) {
			e.note("Close took %v; %d requests held; %d ErrClosed, %d unknown", c.took.Round(time.Millisecond), held.Load(), c.closedN.Load(), c.unknownN.Load())
			if c.closedN.Load() == 0 {
				e.t.Error("no record failed ErrClosed")
			}
		},
	}
}

// 14. Non-retriable errors on partitions 1 and 2 (INVALID_RECORD,
// TOPIC_AUTHORIZATION_FAILED) while partitions 3–5 work; partition 0 answers
// MESSAGE_TOO_LARGE to every batch of more than one record (kpush splits the
// batch until it passes). Records of partitions 1 and 2 fail not written
// with their broker error; every other record is acknowledged.
func relNonRetriable() *relScenario {
	var armed atomic.Pointer[kmsg.ProduceRequest]
	var splits atomic.Int64
	sc := relNonRetriableWith("14-non-retriable-errors-on-some-partitions",
		map[int32]*kerr.Error{1: kerr.InvalidRecord, 2: kerr.TopicAuthorizationFailed})
	setup := sc.setup
	sc.setup = func(e *relEnv) {
		setup(e)
		e.f.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: e.topic, Partitions: []int32{0}, Err: kerr.MessageTooLarge, Count: -1,
			When: func(r kmsg.Request) bool { pr, ok := r.(*kmsg.ProduceRequest); return ok && pr == armed.Load() }})
	}
	sc.onProduce = func(e *relEnv, n int64, req *kmsg.ProduceRequest) (kmsg.Response, error, bool) {
		for _, t := range req.Topics {
			for _, p := range t.Partitions {
				var b kmsg.RecordBatch
				if p.Partition == 0 && b.ReadFrom(p.Records) == nil && b.NumRecords > 1 {
					armed.Store(req)
					splits.Add(1)
				}
			}
		}
		return nil, nil, false
	}
	after := sc.after
	sc.after = func(e *relEnv) {
		after(e)
		e.note("%d multi-record batches of partition 0 refused MESSAGE_TOO_LARGE", splits.Load())
	}
	return sc
}

// 14b. BUG reproduction: every batch of partition 0 is refused
// MESSAGE_TOO_LARGE (as when each record exceeds the topic's
// max.message.bytes). kpush splits batches down to single records, which
// fail for good; but each such failure with batches queued behind it starts
// a retry backoff that grows to ~1s (the failure count is reset only by a
// success), so the partition fails about one record per second: its 1,200
// records take ≈35s (INVALID_RECORD on the same traffic: ≈0.1s), and
// records queued longer than the delivery timeout would fail
// ErrDeliveryTimeout instead of MESSAGE_TOO_LARGE.
func relRejectedPartitionBacksOff() *relScenario {
	sc := relNonRetriableWith("14b-message-too-large-every-record", map[int32]*kerr.Error{0: kerr.MessageTooLarge})
	sc.stall = 10 * time.Second
	return sc
}

func relNonRetriableWith(name string, codes map[int32]*kerr.Error) *relScenario {
	var failed [3]atomic.Int64
	return &relScenario{
		name: name, keys: 24, perKey: 400, window: 16,
		setup: func(e *relEnv) {
			for p, code := range codes {
				e.f.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: e.topic, Partitions: []int32{p}, Err: code, Count: -1})
			}
		},
		onOutcome: func(e *relEnv, k, i int, r *relRecord) {
			if r.outcome == relAcked && codes[r.loc.part] != nil {
				e.violate("acknowledged on a failing partition", "record %d/%d at %d/%d", k, i, r.loc.part, r.loc.offset)
			}
		},
		checkErr: func(e *relEnv, k, i int, err error) error {
			var pe *kpush.ProduceError
			if errors.As(err, &pe) && codes[pe.Partition] != nil && errors.Is(err, codes[pe.Partition]) && errors.Is(err, kpush.ErrNotWritten) {
				failed[pe.Partition].Add(1)
				return nil
			}
			return err
		},
		after: func(e *relEnv) {
			acked, _, _ := e.counts()
			e.note("failed on partitions 0/1/2: %d/%d/%d", failed[0].Load(), failed[1].Load(), failed[2].Load())
			if acked == 0 || failed[0].Load()+failed[1].Load()+failed[2].Load() == 0 {
				e.t.Errorf("acked %d; want both failures and successes", acked)
			}
		},
	}
}

// relExpiry drives the delivery-timeout scenarios: once 30% of the outcomes
// are in, the brokers become unreachable; every outcome must arrive within
// the delivery timeout plus slack, and every error is ErrDeliveryTimeout.
type relExpiry struct {
	once  sync.Once
	cutAt atomic.Int64
	late  atomic.Int64
}

const (
	relDT    = time.Second
	relSlack = 1500 * time.Millisecond
)

func (x *relExpiry) scenario(name string, cut func(e *relEnv)) *relScenario {
	return &relScenario{
		name: name, keys: 16, perKey: 300, allAsync: true, windowDiv: 4, stall: 20 * time.Second,
		delivery: relDT,
		opts: []kpush.Option{kpush.WithRequestTimeout(300 * time.Millisecond),
			kpush.WithDialTimeout(100 * time.Millisecond), kpush.WithRetryBackoff(5 * time.Millisecond)},
		onOutcome: func(e *relEnv, k, i int, r *relRecord) {
			if e.outcomes.Load() >= int64(e.records()*3/10) {
				x.once.Do(func() {
					x.cutAt.Store(e.now())
					cut(e)
				})
			}
			if d := time.Duration(r.end - r.start); d > relDT+relSlack {
				x.late.Add(1)
				e.violate("late outcome", "record %d/%d: outcome after %v (delivery timeout %v): %v", k, i, d, relDT, r.err)
			}
		},
		checkErr: func(e *relEnv, k, i int, err error) error {
			if errors.Is(err, kpush.ErrDeliveryTimeout) {
				return nil
			}
			return err
		},
		after: func(e *relEnv) {
			var maxD time.Duration
			for k := range e.keys {
				for i := range e.perKey {
					r := &e.recs[k][i]
					maxD = max(maxD, time.Duration(r.end-r.start))
				}
			}
			e.note("brokers unreachable from %v; slowest outcome %v (delivery timeout %v)", time.Duration(x.cutAt.Load()).Round(time.Millisecond), maxD.Round(time.Millisecond), relDT)
		},
	}
}

// 15a. Delivery timeout while the brokers are unreachable: every
// connection is closed and new ones are refused (the log stays readable
// for the model check afterwards).
func relUnreachable() *relScenario {
	x := &relExpiry{}
	sc := x.scenario("15a-delivery-timeout-brokers-unreachable", func(e *relEnv) {
		e.net.refuse.Store(true)
		e.net.killAll()
	})
	sc.finish = func(e *relEnv) {
		e.net.refuse.Store(false)
		// The idle window starts after the producer's first idle moment
		// once it has reconnected: its dial and metadata backoffs grew
		// during the outage, so its reconnection can fall anywhere in the
		// windows right after the brokers come back (seen under load: 3
		// ApiVersions in the first window, 2 Metadata and 1 ApiVersions in
		// the second).
		e.waitFirstIdle()
	}
	return sc
}

// 15b. The same with the cluster really closed; it cannot be read back, so
// only outcomes, their categories and their timing are checked.
func relClusterClosed() *relScenario {
	x := &relExpiry{}
	closed := make(chan struct{})
	sc := x.scenario("15b-delivery-timeout-cluster-closed", func(e *relEnv) {
		go func() {
			defer close(closed)
			e.c.Close()
		}()
	})
	sc.noRead = true
	sc.finish = func(e *relEnv) {
		select {
		case <-closed:
		case <-time.After(20 * time.Second):
			e.t.Error("cluster Close did not return")
		}
	}
	return sc
}
