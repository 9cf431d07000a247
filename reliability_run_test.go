package kpush_test

// The scenario runner (reliability_helpers_test.go has the scenario and
// environment types): it builds the cluster, the network layer and the
// producer, runs one sender goroutine per key while faults are injected,
// flushes, measures the idle producer, and hands over to the model check
// (reliability_model_test.go) and the invariants
// (reliability_invariants_test.go).
//
// Goroutines: runReliability owns the senders (one per key, joined before
// the model check), the memory sampler and the starvation probe (both
// stopped before the checks that read what they measured).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

func runReliability(t *testing.T, sc *relScenario) {
	var e *relEnv
	t.Cleanup(func() { relReport.addScenario(relRow(t, sc, e)) })
	if sc.skip != "" && os.Getenv("KPUSH_REL_BUGS") != "1" {
		t.Skip(sc.skip)
	}
	if sc.awaits != "" {
		skipUntilFixed(t, sc.awaits)
	}
	perKey, scale := relPerKey(sc)
	e = &relEnv{
		t: t, sc: sc, net: newRelNet(), topic: "rel", ports: map[int32]int{},
		keys: sc.keys, perKey: perKey,
		done: make(chan struct{}), violations: map[string]int{}, log: &relLogBuf{},
	}
	if sc.brokers == 0 {
		sc.brokers = 3
	}
	if sc.partitions == 0 {
		sc.partitions = 6
	}
	if sc.stall == 0 {
		sc.stall = 30 * time.Second
	}
	if sc.delivery == 0 {
		sc.delivery = 30 * time.Second
	}
	if sc.maxBufBytes == 0 {
		sc.maxBufBytes = defaultMaxBufBytes
	}
	sc.stall *= time.Duration(scale)
	e.net.hook = func(c *relConn, key, version int16, frame []byte) ([]byte, bool) {
		if sc.onResp == nil {
			return nil, false
		}
		return sc.onResp(e, c, key, version, frame)
	}
	opts := []kafkatest.Option{kafkatest.WithBrokers(sc.brokers), kafkatest.WithKfakeOptions(kfake.ListenFn(e.net.listen))}
	if !sc.noTopic {
		opts = append(opts, kafkatest.WithTopic(e.topic, sc.partitions))
	}
	e.c = kafkatest.NewTestCluster(t, opts...)
	t.Cleanup(func() { close(e.done) }) // runs before the cluster's Close
	e.f = e.c.Fake()
	for id, addr := range e.c.Addrs() {
		_, port, _ := net.SplitHostPort(addr)
		e.ports[int32(id)], _ = strconv.Atoi(port)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute*time.Duration(scale))
	t.Cleanup(cancel)
	e.ctx = ctx

	f := e.f
	f.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		n := e.produceReqs.Add(1)
		pr := req.(*kmsg.ProduceRequest)
		if sc.onProduce == nil || e.quiet.Load() {
			e.sawProduce(pr)
			return nil, nil, false
		}
		resp, err, handled := sc.onProduce(e, n, pr)
		switch {
		case !handled:
			e.sawProduce(pr)
		case err != nil:
			// The connection is cut with the request written: kpush cannot
			// know it was not applied, so its records count as maybe
			// written for the ErrSequenceReset invariant; nor can it know
			// about requests it wrote behind this one, which the control
			// never sees (sawCut).
			e.sawCut.Store(true)
			for _, rt := range pr.Topics {
				for _, rp := range rt.Partitions {
					e.markMaybeWritten(rp.Records)
				}
			}
		}
		return resp, err, handled
	})
	if sc.setup != nil {
		sc.setup(e)
	}

	popts := append([]kpush.Option{
		kpush.WithBrokers(e.c.Addrs()...),
		kpush.WithRetryBackoff(2 * time.Millisecond),
		kpush.WithRequestTimeout(2 * time.Second),
		kpush.WithDeliveryTimeout(sc.delivery),
		kpush.WithMaxBufferedBytes(sc.maxBufBytes),
		kpush.WithLogger(slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))),
	}, sc.opts...)
	p, err := kpush.New(popts...)
	if err != nil {
		t.Fatal(err)
	}
	e.p = p
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Close(cctx); err != nil && !errors.Is(err, kpush.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})

	// Send.
	e.recs = make([][]relRecord, e.keys)
	for k := range e.recs {
		e.recs[k] = make([]relRecord, e.perKey)
	}
	e.initInvariants()
	sampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() { defer close(sampled); e.sampleMemoryUntil(sampling) }()
	stopSampling := sync.OnceFunc(func() { close(sampling); <-sampled })
	t.Cleanup(stopSampling)
	e.t0 = time.Now()
	e.inv.probe = startProbe(e.t0)
	t.Cleanup(e.inv.probe.stopProbe)
	var wg sync.WaitGroup
	for k := range e.keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.sendKey(k)
		}()
	}
	sendersDone := make(chan struct{})
	go func() { wg.Wait(); close(sendersDone) }()
	stall := time.NewTimer(sc.stall)
	defer stall.Stop()
	select {
	case <-sendersDone:
	case <-stall.C:
		e.quiet.Store(true)
		state := ""
		if sc.state != nil {
			state = sc.state()
		}
		buf := make([]byte, 1<<20)
		logs := e.log.String()
		if why, ok := awaiting(sc.stallDefect); ok {
			e.summary = &scenarioRow{name: sc.name, records: e.records(), lost: "?", duplicated: "?", reordered: "?", awaiting: sc.stallDefect,
				notes: fmt.Sprintf("senders stalled after %v: %d of %d outcomes", sc.stall, e.outcomes.Load(), e.records())}
			t.Skipf("awaiting fix: %s: %s; observed: senders stalled after %v: %d of %d outcomes\npartitions:\n%s",
				sc.stallDefect, why, sc.stall, e.outcomes.Load(), e.records(), p.DebugPartitions())
		}
		t.Fatalf("%s: senders stalled after %v: %d of %d outcomes; scenario state: %s\nstats %+v\npartitions:\n%s\nlog tail:\n%s\ngoroutines:\n%s",
			sc.name, sc.stall, e.outcomes.Load(), e.records(), state, p.Stats(), p.DebugPartitions(),
			logs[max(0, len(logs)-4000):], buf[:runtime.Stack(buf, true)])
	}
	sendTime := time.Since(e.t0)
	e.inv.probe.stopProbe() // every outcome is in: its window is measured
	e.judgeLateness()
	if *relDiag {
		t.Logf("%s: %s", sc.name, e.lateDiag())
	}
	e.quiet.Store(true)
	e.net.quiet.Store(true)
	if sc.finish != nil {
		sc.finish(e)
	}
	// Let records abandoned in flight (ctx canceled) finish before reading
	// back, so a late retry cannot land after the read.
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	ferr := p.Flush(fctx)
	if ferr != nil && !errors.Is(ferr, kpush.ErrClosed) { // ErrClosed: the scenario closed it
		t.Errorf("%s: Flush after all outcomes: %v; stats %+v\n%s", sc.name, ferr, p.Stats(), p.DebugPartitions())
	}
	fcancel()
	stopSampling()
	if ferr == nil {
		e.measureIdle()
	}

	e.check()
	e.checkInvariants()
	if sc.after != nil {
		sc.after(e)
	}
	e.report(sendTime)
}

func (e *relEnv) sendKey(k int) {
	sc := e.sc
	rng := rand.New(rand.NewPCG(uint64(k), 0x5eed))
	key := relKey(k)
	window := 0
	if sc.allAsync || (sc.window > 0 && k%2 == 1) {
		window = max(sc.window, 1)
		if sc.windowDiv > 0 {
			window = max(e.perKey/sc.windowDiv, 1)
		}
	}
	var sem chan struct{}
	var outstanding sync.WaitGroup
	if window > 0 {
		sem = make(chan struct{}, window)
	}
	for i := range e.perKey {
		rec := &kpush.Record{Topic: e.topic, Key: key, Value: e.value(k, i)}
		ctx, cancel := e.ctx, context.CancelFunc(func() {})
		if sc.ctxFor != nil {
			ctx, cancel = sc.ctxFor(e, k, i, rng)
		}
		ctxDeadline, _ := ctx.Deadline()
		if window == 0 {
			e.recs[k][i].start = e.now()
			e.recs[k][i].deadline = e.recordDeadline(e.recs[k][i].start, ctxDeadline)
			res, err := e.p.Send(ctx, rec)
			cancel()
			e.finishSync(k, i, res, err)
		} else {
			sem <- struct{}{} // released by the callback; the runner bounds the wait
			e.recs[k][i].start = e.now()
			e.recs[k][i].deadline = e.recordDeadline(e.recs[k][i].start, ctxDeadline)
			outstanding.Add(1)
			e.p.SendAsync(ctx, rec, func(res kpush.Result, err error) {
				e.finishAsync(k, i, res, err)
				<-sem
				outstanding.Done()
			})
			cancel()
		}
		if sc.perRecord != nil {
			sc.perRecord(e, k, i)
		}
	}
	outstanding.Wait()
}
