package kpush_test

// Bad input (issue 4): every kind of misuse of New, Send, SendAsync, Flush
// and Close gets its documented typed error at once, while good records
// flow through the same producers; afterwards every good record must be
// acknowledged and in the log exactly once, in order. Each case becomes a
// row of docs/reliability.md (see reliability_report_test.go).

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// badCase is one bad input: run returns the error the API gave.
type badCase struct {
	api, input string
	run        func() error
	want       error // cause, matched with errors.Is
	category   error // ErrNotWritten, ErrOutcomeUnknown, ErrInvalidConfig or nil (a plain sentinel)
}

// check runs the case and reports what is wrong with its error, or "".
func (bc *badCase) check() (got string, problem string) {
	done := make(chan error, 1)
	go func() { done <- bc.run() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		return "", "no answer within 10s"
	}
	if err == nil {
		return "nil", "no error"
	}
	got = err.Error()
	if !errors.Is(err, bc.want) {
		return got, fmt.Sprintf("does not match %v", bc.want)
	}
	switch bc.category {
	case kpush.ErrNotWritten, kpush.ErrOutcomeUnknown:
		var pe *kpush.ProduceError
		if !errors.As(err, &pe) {
			return got, fmt.Sprintf("%T is not a *ProduceError", err)
		}
		other := kpush.ErrOutcomeUnknown
		if bc.category == kpush.ErrOutcomeUnknown {
			other = kpush.ErrNotWritten
		}
		if !errors.Is(err, bc.category) || errors.Is(err, other) {
			return got, fmt.Sprintf("not exactly in category %v", bc.category)
		}
	case kpush.ErrInvalidConfig:
		var ce *kpush.ConfigError
		if !errors.As(err, &ce) || !errors.Is(err, kpush.ErrInvalidConfig) {
			return got, fmt.Sprintf("%T is not a *ConfigError", err)
		}
	}
	if !strings.HasPrefix(got, "kpush: ") && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return got, "message lacks the kpush prefix"
	}
	return got, ""
}

// goodTraffic keeps keyed records flowing through producers while the bad
// input cases run, then checks they were all written exactly once, in
// order.
type goodTraffic struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	sent    []atomic.Int64 // per key: records acknowledged
	errs    atomic.Int64
	firstMu sync.Mutex
	first   error
}

func (g *goodTraffic) start(ctx context.Context, keys int, send func(k int, rec *kpush.Record, done func(error))) {
	g.stop = make(chan struct{})
	g.sent = make([]atomic.Int64, keys)
	for k := range keys {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-g.stop:
					return
				default:
				}
				rec := &kpush.Record{Key: []byte("good-" + strconv.Itoa(k)), Value: []byte(strconv.Itoa(i))}
				ch := make(chan error, 1)
				send(k, rec, func(err error) { ch <- err })
				if err := <-ch; err != nil {
					g.errs.Add(1)
					g.firstMu.Lock()
					if g.first == nil {
						g.first = err
					}
					g.firstMu.Unlock()
					return
				}
				g.sent[k].Add(1)
			}
		}()
	}
}

// verify stops the traffic and reads topic back.
func (g *goodTraffic) verify(t *testing.T, ctx context.Context, c *kafkatest.Cluster, topic string) int {
	t.Helper()
	close(g.stop)
	g.wg.Wait()
	if g.errs.Load() > 0 {
		t.Errorf("%s: %d good records failed, first: %v", topic, g.errs.Load(), g.first)
	}
	recs, err := c.ReadAll(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	next := make([]int64, len(g.sent))
	for _, r := range recs {
		k, err1 := strconv.Atoi(strings.TrimPrefix(string(r.Key), "good-"))
		i, err2 := strconv.ParseInt(string(r.Value), 10, 64)
		if err1 != nil || err2 != nil || k >= len(next) {
			t.Fatalf("%s: foreign record %q=%q", topic, r.Key, r.Value)
		}
		if i != next[k] {
			t.Fatalf("%s: key %d: record %d where %d was due (lost, duplicated or reordered)", topic, k, i, next[k])
		}
		next[k]++
	}
	total := 0
	for k := range next {
		if next[k] != g.sent[k].Load() {
			t.Errorf("%s: key %d: %d records in the log, %d acknowledged", topic, k, next[k], g.sent[k].Load())
		}
		total += int(next[k])
	}
	return total
}

func TestBadInput(t *testing.T) {
	ctx := testCtx(t)
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("good", 3), kafkatest.WithTopic("good-manual", 3), kafkatest.WithTopic("t", 3))
	p := newProducer(t, c, kpush.WithMaxBatchBytes(4096), kpush.WithDefaultTopic("good"))
	manual := newProducer(t, c, kpush.WithPartitioner(kpush.ManualPartitioner), kpush.WithDefaultTopic("good-manual"))
	small := newProducer(t, c, kpush.WithMaxBufferedBytes(2048), kpush.WithDefaultTopic("good"))
	noDefault := newProducer(t, c)
	outOfRange := newProducer(t, c, kpush.WithPartitioner(kpush.PartitionerFunc(func(_ string, _ *kpush.Record, n int) int { return n })))

	// Good records on all three producers, sync and async, for the whole test.
	var good, goodManual goodTraffic
	good.start(ctx, 6, func(k int, rec *kpush.Record, done func(error)) {
		switch k % 3 {
		case 0:
			_, err := p.Send(ctx, rec)
			done(err)
		case 1:
			p.SendAsync(ctx, rec, func(_ kpush.Result, err error) { done(err) })
		default:
			_, err := small.Send(ctx, rec)
			done(err)
		}
	})
	goodManual.start(ctx, 3, func(k int, rec *kpush.Record, done func(error)) {
		rec.Partition = int32(k)
		manual.SendAsync(ctx, rec, func(_ kpush.Result, err error) { done(err) })
	})

	// A second cluster holds every produce request, so that records stay
	// in flight while Flush and Close are misused. The control function
	// blocks instead of using kfake's SleepControl: a slept request
	// released while its connection is already closed (Close below) and
	// the cluster closing right after could deadlock kfake's run loop
	// (seen twice under load: "cluster goroutines still running ... in
	// continueSleptControl"). Blocking only stalls this test's own cluster.
	held := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	release := make(chan struct{})
	hf := held.Fake()
	hf.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		hf.KeepControl()
		<-release
		return nil, nil, false
	})
	defer close(release) // before the cluster's Close (a t.Cleanup)
	q := newProducer(t, held, kpush.WithMaxBufferedRecords(1), kpush.WithFailFastWhenFull(true))
	qOutcomes := make(chan error, 4)
	q.SendAsync(ctx, &kpush.Record{Topic: "t", Value: []byte("held")}, func(_ kpush.Result, err error) { qOutcomes <- err })

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	expired, cancel2 := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel2()
	rec := func(topic string, mod func(r *kpush.Record)) *kpush.Record {
		r := &kpush.Record{Topic: topic, Value: []byte("bad")}
		if mod != nil {
			mod(r)
		}
		return r
	}
	big := make([]byte, 5000)

	// Bad records, each through Send and SendAsync.
	records := []struct {
		input string
		p     *kpush.Producer
		ctx   context.Context
		rec   *kpush.Record
		want  error
	}{
		{"nil record", p, ctx, nil, kpush.ErrNilRecord},
		{"no topic and no default topic", noDefault, ctx, rec("", nil), kpush.ErrNoTopic},
		{"topic name with a space", p, ctx, rec("bad topic", nil), kpush.ErrInvalidTopic},
		{"topic name with a slash", p, ctx, rec("a/b", nil), kpush.ErrInvalidTopic},
		{"topic name \"..\"", p, ctx, rec("..", nil), kpush.ErrInvalidTopic},
		{"topic name of 250 bytes", p, ctx, rec(strings.Repeat("x", 250), nil), kpush.ErrInvalidTopic},
		{"unknown topic", p, ctx, rec("no-such-topic", nil), kpush.ErrUnknownTopic},
		{"value larger than the batch", p, ctx, rec("t", func(r *kpush.Record) { r.Value = big }), kpush.ErrRecordTooLarge},
		{"key larger than the batch", p, ctx, rec("t", func(r *kpush.Record) { r.Key = big }), kpush.ErrRecordTooLarge},
		{"header larger than the batch", p, ctx, rec("t", func(r *kpush.Record) { r.Headers = []kpush.Header{{Key: "h", Value: big}} }), kpush.ErrRecordTooLarge},
		{"record larger than the whole buffer", small, ctx, rec("t", func(r *kpush.Record) { r.Value = big }), kpush.ErrRecordTooLarge},
		{"header key not UTF-8", p, ctx, rec("t", func(r *kpush.Record) { r.Headers = []kpush.Header{{Key: "\xff\xfe", Value: []byte("v")}} }), kpush.ErrInvalidHeader},
		{"timestamp before 1970", p, ctx, rec("t", func(r *kpush.Record) { r.Timestamp = time.Date(1969, 7, 20, 0, 0, 0, 0, time.UTC) }), kpush.ErrInvalidTimestamp},
		{"negative partition (manual partitioner)", manual, ctx, rec("t", func(r *kpush.Record) { r.Partition = -1 }), kpush.ErrInvalidPartition},
		{"partition out of range (manual partitioner)", manual, ctx, rec("t", func(r *kpush.Record) { r.Partition = 3 }), kpush.ErrInvalidPartition},
		{"negative partition (UsePartition)", p, ctx, rec("t", func(r *kpush.Record) { r.Partition, r.UsePartition = -1, true }), kpush.ErrInvalidPartition},
		{"partition out of range (UsePartition)", p, ctx, rec("t", func(r *kpush.Record) { r.Partition, r.UsePartition = 3, true }), kpush.ErrInvalidPartition},
		{"custom partitioner returns the partition count", outOfRange, ctx, rec("t", nil), kpush.ErrInvalidPartition},
		{"canceled ctx", p, canceled, rec("t", nil), context.Canceled},
		{"expired ctx deadline", p, expired, rec("t", nil), context.DeadlineExceeded},
		{"buffer full, fail-fast mode", q, ctx, rec("t", nil), kpush.ErrBufferFull},
	}
	var cases []badCase
	for _, r := range records {
		cases = append(cases,
			badCase{api: "Send", input: r.input, want: r.want, category: kpush.ErrNotWritten, run: func() error {
				_, err := r.p.Send(r.ctx, r.rec)
				return err
			}},
			badCase{api: "SendAsync", input: r.input, want: r.want, category: kpush.ErrNotWritten, run: func() error {
				ch := make(chan error, 2)
				r.p.SendAsync(r.ctx, r.rec, func(_ kpush.Result, err error) { ch <- err })
				err := <-ch
				select {
				case err2 := <-ch:
					return fmt.Errorf("callback ran twice: %v, then %v", err, err2)
				case <-time.After(time.Millisecond):
				}
				return err
			}})
	}

	// Invalid options.
	for _, o := range []struct {
		input string
		opts  []kpush.Option
	}{
		{"no seed brokers", nil},
		{"broker address without a port", []kpush.Option{kpush.WithBrokers("localhost")}},
		{"zero request timeout", []kpush.Option{kpush.WithRequestTimeout(0)}},
		{"negative delivery timeout", []kpush.Option{kpush.WithDeliveryTimeout(-time.Second)}},
		{"zero retry backoff", []kpush.Option{kpush.WithRetryBackoff(0)}},
		{"6 requests in flight with idempotence", []kpush.Option{kpush.WithMaxInflight(6)}},
		{"idempotence with acks=1", []kpush.Option{kpush.WithAcks(kpush.AcksLeader), kpush.WithIdempotence(true)}},
		{"unknown compression codec", []kpush.Option{kpush.WithCompression(9)}},
		{"zero buffer bytes", []kpush.Option{kpush.WithMaxBufferedBytes(0)}},
		{"invalid default topic name", []kpush.Option{kpush.WithDefaultTopic("no spaces allowed")}},
	} {
		cases = append(cases, badCase{api: "New", input: o.input, want: kpush.ErrInvalidConfig, category: kpush.ErrInvalidConfig, run: func() error {
			opts := o.opts
			if o.input != "no seed brokers" && o.input != "broker address without a port" {
				opts = append([]kpush.Option{kpush.WithBrokers(c.Addrs()...)}, opts...)
			}
			np, err := kpush.New(opts...)
			if err == nil {
				np.Close(ctx)
			}
			return err
		}})
	}

	// Flush and Close misused on q, whose one record is held in flight.
	cases = append(cases,
		badCase{api: "Flush", input: "canceled ctx while a record is in flight", want: context.Canceled, category: kpush.ErrOutcomeUnknown,
			run: func() error { return q.Flush(canceled) }},
		badCase{api: "Flush", input: "ctx deadline passes while a record is in flight", want: context.DeadlineExceeded, category: kpush.ErrOutcomeUnknown,
			run: func() error {
				fctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
				defer cancel()
				return q.Flush(fctx)
			}},
		badCase{api: "Close", input: "canceled ctx while a record is in flight", want: context.Canceled, category: kpush.ErrOutcomeUnknown,
			run: func() error { return q.Close(canceled) }},
		badCase{api: "Close", input: "second Close", want: kpush.ErrClosed, run: func() error { return q.Close(ctx) }},
		badCase{api: "Flush", input: "after Close", want: kpush.ErrClosed, run: func() error { return q.Flush(ctx) }},
		badCase{api: "Send", input: "after Close", want: kpush.ErrClosed, category: kpush.ErrNotWritten,
			run: func() error { _, err := q.Send(ctx, rec("t", nil)); return err }},
		badCase{api: "SendAsync", input: "after Close", want: kpush.ErrClosed, category: kpush.ErrNotWritten,
			run: func() error {
				ch := make(chan error, 1)
				q.SendAsync(ctx, rec("t", nil), func(_ kpush.Result, err error) { ch <- err })
				return <-ch
			}},
	)

	kinds := map[string]bool{}
	for _, bc := range cases {
		got, problem := bc.check()
		kinds[bc.input] = true
		relReport.addBadInput(bc.api, bc.input, bc.want, bc.category, got, problem)
		if problem != "" {
			t.Errorf("%s(%s): %s (error: %s)", bc.api, bc.input, problem, got)
		}
	}
	if len(kinds) < 20 {
		t.Errorf("only %d kinds of bad input", len(kinds))
	}

	// The record held in flight when Close gave up has exactly one outcome:
	// unknown (it was sent).
	select {
	case err := <-qOutcomes:
		checkErr(t, err, kpush.ErrOutcomeUnknown, kpush.ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("the held record got no outcome from Close")
	}
	select {
	case err := <-qOutcomes:
		t.Fatalf("the held record got a second outcome: %v", err)
	default:
	}

	// Good records were untouched.
	n := good.verify(t, ctx, c, "good") + goodManual.verify(t, ctx, c, "good-manual")
	if n == 0 {
		t.Fatal("no good records flowed during the bad input")
	}
	relReport.setBadInputGood(n)
	t.Logf("%d bad input cases (%d kinds), %d good records written exactly once meanwhile", len(cases), len(kinds), n)
}
