package realfaults

// A compact model of the reliability suite's checks (the root package's
// reliability_model_test.go runs them on the fake cluster): many keys
// send from their own goroutines, a fault runs once mid-traffic, then the
// log is read back and every outcome is checked:
//
//   - every record has exactly one outcome, a *kpush.ProduceError that
//     matches exactly one of ErrNotWritten and ErrOutcomeUnknown, or a Result;
//   - acknowledged ⇒ in the log exactly once, at the reported partition and
//     offset; not written ⇒ absent; unknown ⇒ present at most once;
//   - per key, the records present are in send order on one partition;
//   - liveness: every outcome arrives within the delivery timeout plus
//     slack, and after the fault the producer sends again (every record of
//     the post-fault key is acknowledged);
//   - memory: Stats().BytesBuffered never exceeds WithMaxBufferedBytes.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

const (
	outPending = iota
	outAcked
	outNotWritten
	outUnknown
)

type mrec struct {
	calls      atomic.Int32
	outcome    int
	part       int32
	offset     int64
	err        error
	start, end time.Duration

	seen   int
	foundP int32
	foundO int64
}

// scenario is one fault run; zero fields take defaults.
type scenario struct {
	parts   int32              // default 6
	configs map[string]*string // topic configs
	keys    int                // sender goroutines, one key each (default 8)
	perKey  int                // records per key (default 400)
	window  int                // odd keys send async with this many outstanding (default 64)
	value   int                // value size in bytes (default 100)
	// bufLimit is WithMaxBufferedBytes (default 32 KiB: less than the
	// async keys keep outstanding, so senders wait for space).
	bufLimit int64
	opts     []kpush.Option
	// faultAt is the fraction of outcomes after which fault runs (default 0.25).
	faultAt float64
	// fault runs once on its own goroutine while records are sent; it must
	// leave the cluster healthy before it returns.
	fault func(r *run)
	// check, if set, vets each failed record's error (nil = allowed).
	check func(err error) error
	// topicReset: the topic is deleted and recreated, so acknowledged
	// records from before may be gone; only the other checks apply to them.
	topicReset bool
	// midway, if set, runs once when every key has sent half its records
	// and has nothing outstanding (the producer is idle); the keys resume
	// when it returns.
	midway   func(r *run)
	minAcked float64 // fraction of the main records that must be acked
	post     int     // post-fault records, all must be acked (default 100)
}

const (
	deliveryTimeout = 30 * time.Second
	livenessSlack   = 10 * time.Second
)

// run is one running scenario.
type run struct {
	t     *testing.T
	sc    *scenario
	tg    target
	fc    *faultCluster // nil unless tg is the fault cluster
	topic string
	p     *kpush.Producer
	ctx   context.Context
	t0    time.Time
	recs  [][]mrec // keys+1 rows: the last is the post-fault key

	outcomes  atomic.Int64
	trigger   chan struct{}
	trigOnce  sync.Once
	faultDone chan struct{}
	arrived   sync.WaitGroup // keys at the midway point
	resume    chan struct{}  // closed after midway ran
	maxBuf    atomic.Int64
	log       *logBuf

	mu    sync.Mutex
	notes []string
}

// note adds a line to the scenario's summary.
func (r *run) note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func value(k, i, size int) []byte {
	v := []byte(strconv.Itoa(k) + "/" + strconv.Itoa(i) + "/")
	for len(v) < size {
		v = append(v, 'x')
	}
	return v
}

func key(k int) []byte { return []byte("key-" + strconv.Itoa(k)) }

// target is what a scenario runs against.
type target interface {
	clientAddrs() []string
	createTopic(ctx context.Context, name string, parts int32, configs map[string]*string) error
	readAll(ctx context.Context, topic string) ([]kafkatest.Record, error)
}

func (f *faultCluster) readAll(ctx context.Context, topic string) ([]kafkatest.Record, error) {
	return f.c.ReadAll(ctx, topic)
}

// topicSeq numbers the scenarios' topics (a test may run several).
var topicSeq atomic.Int64

func runScenario(t *testing.T, tg target, sc *scenario) *run {
	t.Helper()
	if sc.parts == 0 {
		sc.parts = 6
	}
	if sc.keys == 0 {
		sc.keys = 8
	}
	if sc.perKey == 0 {
		sc.perKey = 400
	}
	if sc.window == 0 {
		sc.window = 64
	}
	if sc.value == 0 {
		sc.value = 100
	}
	if sc.bufLimit == 0 {
		sc.bufLimit = 32 << 10
	}
	if sc.faultAt == 0 {
		sc.faultAt = 0.25
	}
	if sc.post == 0 {
		sc.post = 100
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	r := &run{
		t: t, sc: sc, tg: tg, ctx: ctx, resume: make(chan struct{}),
		topic:     strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()) + "-" + strconv.Itoa(int(topicSeq.Add(1))),
		trigger:   make(chan struct{}),
		faultDone: make(chan struct{}),
		log:       &logBuf{},
	}
	r.fc, _ = tg.(*faultCluster)
	if err := tg.createTopic(ctx, r.topic, sc.parts, sc.configs); err != nil {
		t.Fatal(err)
	}
	opts := append([]kpush.Option{
		kpush.WithBrokers(tg.clientAddrs()...),
		kpush.WithDeliveryTimeout(deliveryTimeout),
		kpush.WithRequestTimeout(5 * time.Second),
		kpush.WithRetryBackoff(20 * time.Millisecond),
		kpush.WithMaxBufferedBytes(sc.bufLimit),
		kpush.WithMetadataMaxAge(5 * time.Second),
		kpush.WithLogger(slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug}))),
	}, sc.opts...)
	p, err := kpush.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	r.p = p
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		if err := p.Close(cctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()

	// Memory bound: sampled while sending (the buffer has no event to wait on).
	sampleDone := make(chan struct{})
	stopSample := make(chan struct{})
	go func() {
		defer close(sampleDone)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSample:
				return
			case <-tick.C:
				if b := p.Stats().BytesBuffered; b > r.maxBuf.Load() {
					r.maxBuf.Store(b)
				}
			}
		}
	}()

	r.recs = make([][]mrec, sc.keys+1)
	for k := range r.recs {
		n := sc.perKey
		if k == sc.keys {
			n = sc.post
		}
		r.recs[k] = make([]mrec, n)
	}
	total := int64(sc.keys * sc.perKey)
	go func() {
		defer close(r.faultDone)
		select {
		case <-r.trigger:
		case <-ctx.Done():
			return
		}
		if sc.fault != nil {
			start := time.Now()
			sc.fault(r)
			r.note("fault took %v", time.Since(start).Round(time.Millisecond))
		}
	}()

	r.arrived.Add(sc.keys)
	if sc.midway == nil {
		close(r.resume)
	} else {
		go func() {
			r.arrived.Wait()
			start := time.Now()
			sc.midway(r)
			r.note("midway took %v", time.Since(start).Round(time.Millisecond))
			close(r.resume)
		}()
	}
	r.t0 = time.Now()
	var wg sync.WaitGroup
	for k := range sc.keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.sendKey(k, k%2 == 1, func() {
				if r.outcomes.Add(1) >= int64(float64(total)*sc.faultAt) {
					r.trigOnce.Do(func() { close(r.trigger) })
				}
			})
		}()
	}
	sendersDone := make(chan struct{})
	go func() { wg.Wait(); close(sendersDone) }()
	waitOrFatal(t, r, sendersDone, deliveryTimeout*4, "senders")
	r.trigOnce.Do(func() { close(r.trigger) })
	waitOrFatal(t, r, r.faultDone, 4*time.Minute, "fault")
	postStart := time.Now()
	r.sendKey(sc.keys, true, func() {})
	r.note("post-fault %d records in %v", sc.post, time.Since(postStart).Round(time.Millisecond))
	close(stopSample)
	<-sampleDone
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	if err := p.Flush(fctx); err != nil {
		t.Errorf("Flush: %v", err)
	}
	fcancel()
	r.check()
	return r
}

func waitOrFatal(t *testing.T, r *run, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ch:
	case <-tm.C:
		logs := r.log.String()
		t.Fatalf("%s did not finish within %v: %d outcomes; stats %+v\nlog tail:\n%s", what, d, r.outcomes.Load(), r.p.Stats(), logs[max(0, len(logs)-4000):])
	}
}

// sendKey sends key k's records: synchronously one at a time, or
// asynchronously with up to the scenario's window outstanding.
func (r *run) sendKey(k int, async bool, counted func()) {
	var sem chan struct{}
	if async {
		sem = make(chan struct{}, r.sc.window)
	}
	var outstanding sync.WaitGroup
	for i := range r.recs[k] {
		if k < r.sc.keys && i == len(r.recs[k])/2 {
			outstanding.Wait()
			r.arrived.Done()
			<-r.resume
		}
		rec := &kpush.Record{Topic: r.topic, Key: key(k), Value: value(k, i, r.sc.value)}
		m := &r.recs[k][i]
		m.start = time.Since(r.t0)
		if !async {
			res, err := r.p.Send(r.ctx, rec)
			r.finish(m, res, err)
			counted()
			continue
		}
		sem <- struct{}{}
		outstanding.Add(1)
		r.p.SendAsync(r.ctx, rec, func(res kpush.Result, err error) {
			r.finish(m, res, err)
			counted()
			<-sem
			outstanding.Done()
		})
	}
	outstanding.Wait()
}

func (r *run) finish(m *mrec, res kpush.Result, err error) {
	if m.calls.Add(1) != 1 {
		r.t.Errorf("outcome delivered twice: %v %v", res, err)
		return
	}
	m.end = time.Since(r.t0)
	if err == nil {
		m.outcome, m.part, m.offset = outAcked, res.Partition, res.Offset
		return
	}
	m.err = err
	var pe *kpush.ProduceError
	nw, un := errors.Is(err, kpush.ErrNotWritten), errors.Is(err, kpush.ErrOutcomeUnknown)
	switch {
	case !errors.As(err, &pe):
		r.t.Errorf("error %v (%T) is not a *kpush.ProduceError", err, err)
	case nw == un:
		r.t.Errorf("error %v matches not-written=%v unknown=%v", err, nw, un)
	}
	m.outcome = outNotWritten
	if un {
		m.outcome = outUnknown
	}
	if r.sc.check != nil {
		if cerr := r.sc.check(err); cerr != nil {
			r.t.Errorf("unexpected error: %v", cerr)
		}
	}
}

// check reads the log back and applies the model.
func (r *run) check() {
	t := r.t
	got, err := r.tg.readAll(r.ctx, r.topic)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	bad := 0
	for _, g := range got {
		parts := strings.SplitN(string(g.Value), "/", 3)
		k, err1 := strconv.Atoi(parts[0])
		i, err2 := -1, error(nil)
		if len(parts) > 1 {
			i, err2 = strconv.Atoi(parts[1])
		}
		if err1 != nil || err2 != nil || k < 0 || k >= len(r.recs) || i < 0 || i >= len(r.recs[k]) || string(g.Key) != string(key(k)) {
			if bad++; bad <= 3 {
				t.Errorf("unexpected record at %d/%d: %q=%q", g.Partition, g.Offset, g.Key, g.Value)
			}
			continue
		}
		m := &r.recs[k][i]
		if m.seen == 0 {
			m.foundP, m.foundO = g.Partition, g.Offset
		}
		m.seen++
	}
	var counts [4]int
	var lost, dup, reord, absentNW, late int
	var slowest time.Duration
	examples := map[string]int{}
	ex := func(kind, format string, args ...any) {
		if examples[kind]++; examples[kind] <= 3 {
			t.Errorf("%s: %s", kind, fmt.Sprintf(format, args...))
		}
	}
	for k := range r.recs {
		lastP, lastO := int32(-1), int64(-1)
		for i := range r.recs[k] {
			m := &r.recs[k][i]
			if m.calls.Load() == 0 {
				ex("no outcome", "record %d/%d", k, i)
				continue
			}
			counts[m.outcome]++
			if d := m.end - m.start; d > slowest {
				slowest = d
			}
			if m.end-m.start > deliveryTimeout+livenessSlack {
				late++
				ex("late outcome", "record %d/%d took %v", k, i, m.end-m.start)
			}
			if m.seen > 1 {
				dup++
				ex("duplicated", "record %d/%d (outcome %d, err %v) present %d times", k, i, m.outcome, m.err, m.seen)
			}
			switch m.outcome {
			case outAcked:
				switch {
				case m.seen == 0 && !r.sc.topicReset:
					lost++
					ex("lost", "record %d/%d acknowledged at %d/%d is absent", k, i, m.part, m.offset)
				case m.seen > 0 && (m.foundP != m.part || m.foundO != m.offset):
					ex("misreported", "record %d/%d acknowledged at %d/%d is at %d/%d", k, i, m.part, m.offset, m.foundP, m.foundO)
				}
			case outNotWritten:
				if m.seen > 0 {
					absentNW++
					ex("not written but present", "record %d/%d failed with %v but is at %d/%d", k, i, m.err, m.foundP, m.foundO)
				}
			}
			if k == len(r.recs)-1 && m.outcome != outAcked {
				ex("post-fault record failed", "record %d/%d: %v", k, i, m.err)
			}
			if m.seen > 0 {
				if lastP >= 0 && (m.foundP != lastP || m.foundO <= lastO) {
					reord++
					ex("reordered", "key %d: record %d at %d/%d after %d/%d", k, i, m.foundP, m.foundO, lastP, lastO)
				}
				lastP, lastO = m.foundP, m.foundO
			}
		}
	}
	main := r.sc.keys * r.sc.perKey
	ackedMain := counts[outAcked] - min(counts[outAcked], r.sc.post)
	if float64(ackedMain) < r.sc.minAcked*float64(main) {
		t.Errorf("only %d of %d records acknowledged, want at least %.0f%%", ackedMain, main, 100*r.sc.minAcked)
	}
	if mb := r.maxBuf.Load(); mb > r.sc.bufLimit {
		t.Errorf("memory bound: %d bytes buffered, limit %d", mb, r.sc.bufLimit)
	}
	st := r.p.Stats()
	r.mu.Lock()
	notes := strings.Join(r.notes, "; ")
	r.mu.Unlock()
	t.Logf("%s: %d records: acked %d, not written %d, unknown %d; lost %d dup %d reordered %d late %d; slowest outcome %v; max buffered %d of %d B; retries %d, requests %d, throttles %d; %s",
		r.topic, main+r.sc.post, counts[outAcked], counts[outNotWritten], counts[outUnknown], lost, dup, reord, late,
		slowest.Round(time.Millisecond), r.maxBuf.Load(), r.sc.bufLimit, st.Retries, st.Requests, st.Throttles, notes)
	if t.Failed() {
		logs := r.log.String()
		t.Logf("producer log tail:\n%s", logs[max(0, len(logs)-6000):])
	}
}

// logBuf keeps the last 64 KiB of the producer's debug log.
type logBuf struct {
	mu sync.Mutex
	b  []byte
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if len(l.b) > 128<<10 {
		l.b = append(l.b[:0], l.b[len(l.b)-64<<10:]...)
	}
	return len(p), nil
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
