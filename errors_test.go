package kpush_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

func TestNew_InvalidOptions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   []kpush.Option
		option string
	}{
		{"no brokers", nil, "WithBrokers"},
		{"broker without port", []kpush.Option{kpush.WithBrokers("localhost")}, "WithBrokers"},
		{"broker bad port", []kpush.Option{kpush.WithBrokers("localhost:99999")}, "WithBrokers"},
		{"bad acks", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithAcks(2)}, "WithAcks"},
		{"idempotence without acks all", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithAcks(kpush.AcksLeader), kpush.WithIdempotence(true)}, "WithIdempotence"},
		{"zero inflight", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithMaxInflight(0)}, "WithMaxInflight"},
		{"idempotent inflight 6", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithMaxInflight(6)}, "WithMaxInflight"},
		{"tiny batch", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithMaxBatchBytes(10)}, "WithMaxBatchBytes"},
		{"request cap below the batch size", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithMaxRequestBytes(1000)}, "WithMaxRequestBytes"},
		{"request cap above 1 GiB", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithMaxRequestBytes(1<<30 + 1)}, "WithMaxRequestBytes"},
		{"negative linger", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithLinger(-time.Second)}, "WithLinger"},
		{"negative coalesce bytes", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithCoalesceBytes(-1)}, "WithCoalesceBytes"},
		{"zero buffer bytes", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithMaxBufferedBytes(0)}, "WithMaxBufferedBytes"},
		{"negative buffer records", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithMaxBufferedRecords(-1)}, "WithMaxBufferedRecords"},
		{"zero request timeout", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithRequestTimeout(0)}, "WithRequestTimeout"},
		{"delivery below request timeout", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithDeliveryTimeout(time.Second)}, "WithDeliveryTimeout"},
		{"negative backoff", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithRetryBackoff(-1)}, "WithRetryBackoff"},
		{"zero dial timeout", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithDialTimeout(0)}, "WithDialTimeout"},
		{"unknown codec", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithCompression(9)}, "WithCompression"},
		{"nil partitioner", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithPartitioner(nil)}, "WithPartitioner"},
		{"zero metadata age", []kpush.Option{kpush.WithBrokers("a:1"), kpush.WithMetadataMaxAge(0)}, "WithMetadataMaxAge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := kpush.New(tc.opts...)
			if err == nil {
				p.Close(context.Background())
				t.Fatal("New succeeded")
			}
			var ce *kpush.ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, kpush.ErrInvalidConfig) {
				t.Fatalf("error %v is not a *ConfigError", err)
			}
			if ce.Option != tc.option {
				t.Fatalf("error names option %q, want %q (%v)", ce.Option, tc.option, err)
			}
			if !strings.HasPrefix(err.Error(), "kpush: ") {
				t.Fatalf("message %q lacks the kpush prefix", err)
			}
		})
	}
}

// checkErr asserts err is a *ProduceError of the given category and cause.
func checkErr(t *testing.T, err error, category, cause error) *kpush.ProduceError {
	t.Helper()
	var pe *kpush.ProduceError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *ProduceError", err, err)
	}
	if !errors.Is(err, category) {
		t.Fatalf("error %v does not match %v", err, category)
	}
	other := kpush.ErrOutcomeUnknown
	if category == kpush.ErrOutcomeUnknown {
		other = kpush.ErrNotWritten
	}
	if errors.Is(err, other) {
		t.Fatalf("error %v matches both categories", err)
	}
	if cause != nil && !errors.Is(err, cause) {
		t.Fatalf("error %v does not have cause %v", err, cause)
	}
	return pe
}

func TestSend_BadInput(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 3))
	p := newProducer(t, c, kpush.WithMaxBatchBytes(4096))
	manual := newProducer(t, c, kpush.WithPartitioner(kpush.ManualPartitioner))
	ctx := testCtx(t)
	canceled, cancel := context.WithCancel(ctx)
	cancel()

	for _, tc := range []struct {
		name  string
		p     *kpush.Producer
		ctx   context.Context
		rec   *kpush.Record
		cause error
	}{
		{"nil record", p, ctx, nil, kpush.ErrNilRecord},
		{"no topic", p, ctx, &kpush.Record{Value: []byte("x")}, kpush.ErrNoTopic},
		{"too large", p, ctx, &kpush.Record{Topic: "t", Value: make([]byte, 5000)}, kpush.ErrRecordTooLarge},
		{"header too large", p, ctx, &kpush.Record{Topic: "t", Headers: []kpush.Header{{Key: "h", Value: make([]byte, 5000)}}}, kpush.ErrRecordTooLarge},
		{"unknown topic", p, ctx, &kpush.Record{Topic: "nope", Value: []byte("x")}, kpush.ErrUnknownTopic},
		{"negative partition", manual, ctx, &kpush.Record{Topic: "t", Partition: -1}, kpush.ErrInvalidPartition},
		{"partition out of range", manual, ctx, &kpush.Record{Topic: "t", Partition: 3}, kpush.ErrInvalidPartition},
		{"canceled ctx", p, canceled, &kpush.Record{Topic: "t"}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.p.Send(tc.ctx, tc.rec)
			checkErr(t, err, kpush.ErrNotWritten, tc.cause)

			var async error
			done := make(chan struct{})
			tc.p.SendAsync(tc.ctx, tc.rec, func(_ kpush.Result, err error) { async = err; close(done) })
			<-done
			checkErr(t, async, kpush.ErrNotWritten, tc.cause)
		})
	}
	// Good records still flow after all of that.
	if _, err := p.Send(ctx, &kpush.Record{Topic: "t", Value: []byte("ok")}); err != nil {
		t.Fatal(err)
	}
	if _, err := manual.Send(ctx, &kpush.Record{Topic: "t", Partition: 2}); err != nil {
		t.Fatal(err)
	}
}

func TestSend_AfterClose(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	p := newProducer(t, c)
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "t"}); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := p.Send(ctx, &kpush.Record{Topic: "t"})
	checkErr(t, err, kpush.ErrNotWritten, kpush.ErrClosed)
	if err := p.Close(ctx); !errors.Is(err, kpush.ErrClosed) {
		t.Fatalf("second Close: %v, want ErrClosed", err)
	}
	if err := p.Flush(ctx); !errors.Is(err, kpush.ErrClosed) {
		t.Fatalf("Flush after Close: %v, want ErrClosed", err)
	}
}

// holdProduce makes the cluster hold every produce request until release
// is closed. The hold is kafkatest's SleepControl, so the cluster's Close
// (a t.Cleanup) waits for held requests to resume before kfake closes: a
// request resuming while kfake closes could deadlock its run loop
// (TestClose_FailsBufferedRecords under -race: "cluster goroutines still
// running ... continueSleptControl").
func holdProduce(c *kafkatest.Cluster, release <-chan struct{}) {
	f := c.Fake()
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		c.SleepControl(func() { <-release })
		return nil, nil, false
	})
}

func TestSend_BufferFullFailFast(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	p := newProducer(t, c, kpush.WithMaxBufferedRecords(2), kpush.WithFailFastWhenFull(true))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "t"}); err != nil { // metadata loaded
		t.Fatal(err)
	}
	release := make(chan struct{})
	holdProduce(c, release)
	var wg sync.WaitGroup
	var errs [2]error
	for i := range 2 {
		wg.Add(1)
		p.SendAsync(ctx, &kpush.Record{Topic: "t"}, func(_ kpush.Result, err error) { errs[i] = err; wg.Done() })
	}
	_, err := p.Send(ctx, &kpush.Record{Topic: "t"})
	checkErr(t, err, kpush.ErrNotWritten, kpush.ErrBufferFull)
	close(release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("buffered record %d: %v", i, err)
		}
	}
	if _, err := p.Send(ctx, &kpush.Record{Topic: "t"}); err != nil {
		t.Fatalf("after space freed: %v", err)
	}
}

func TestSend_BufferFullBlocksUntilCtx(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	p := newProducer(t, c, kpush.WithMaxBufferedRecords(1))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "t"}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	holdProduce(c, release)
	done := make(chan error, 1)
	p.SendAsync(ctx, &kpush.Record{Topic: "t"}, func(_ kpush.Result, err error) { done <- err })
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err := p.Send(short, &kpush.Record{Topic: "t"})
	checkErr(t, err, kpush.ErrNotWritten, context.DeadlineExceeded)
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSend_CtxCanceled distinguishes a record withdrawn before it was sent
// (not written, and indeed absent) from one canceled in flight (unknown).
func TestSend_CtxCanceled(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	p := newProducer(t, c, kpush.WithMaxInflight(1))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "t", Value: []byte("warmup")}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	holdProduce(c, release)

	inflightCtx, cancelInflight := context.WithCancel(ctx)
	inflightErr := make(chan error, 1)
	go func() {
		_, err := p.Send(inflightCtx, &kpush.Record{Topic: "t", Value: []byte("inflight")})
		inflightErr <- err
	}()
	waitFor(t, func() bool { return p.Stats().InflightRequests == 1 })

	bufferedCtx, cancelBuffered := context.WithCancel(ctx)
	bufferedErr := make(chan error, 1)
	go func() {
		_, err := p.Send(bufferedCtx, &kpush.Record{Topic: "t", Value: []byte("buffered")})
		bufferedErr <- err
	}()
	waitFor(t, func() bool { return p.Stats().RecordsBuffered == 2 })
	cancelBuffered()
	checkErr(t, <-bufferedErr, kpush.ErrNotWritten, context.Canceled)
	cancelInflight()
	checkErr(t, <-inflightErr, kpush.ErrOutcomeUnknown, context.Canceled)

	close(release)
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := c.ReadAll(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	for _, r := range got {
		values = append(values, string(r.Value))
	}
	if strings.Join(values, ",") != "warmup,inflight" {
		t.Fatalf("topic holds %v; want the in-flight record written and the withdrawn one absent", values)
	}
}

// TestSend_BrokerRejectsPartition: a non-retriable error on one partition
// fails only that partition's records, as not written, with the broker's
// error; other partitions keep succeeding.
func TestSend_BrokerRejectsPartition(t *testing.T) {
	for _, code := range []*kerr.Error{kerr.MessageTooLarge, kerr.InvalidRecord, kerr.TopicAuthorizationFailed} {
		t.Run(code.Message, func(t *testing.T) {
			c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 2))
			p := newProducer(t, c, kpush.WithPartitioner(kpush.ManualPartitioner))
			ctx := testCtx(t)
			h := c.Fake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Partitions: []int32{0}, Err: code, Count: -1})
			defer h.Remove()
			for i := range 20 {
				part := int32(i % 2)
				_, err := p.Send(ctx, &kpush.Record{Topic: "t", Partition: part})
				if part == 1 {
					if err != nil {
						t.Fatalf("partition 1: %v", err)
					}
					continue
				}
				pe := checkErr(t, err, kpush.ErrNotWritten, code)
				if pe.Topic != "t" || pe.Partition != 0 {
					t.Fatalf("error names %s[%d]", pe.Topic, pe.Partition)
				}
			}
			got, err := c.ReadAll(ctx, "t")
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range got {
				if r.Partition == 0 {
					t.Fatalf("a rejected record is in partition 0 at offset %d", r.Offset)
				}
			}
			if len(got) != 10 {
				t.Fatalf("read %d records, want 10", len(got))
			}
		})
	}
}

// TestSend_RetriableErrorsAreRetried: injected retriable errors are retried
// in order with no duplicates.
func TestSend_RetriableErrorsAreRetried(t *testing.T) {
	for _, code := range []*kerr.Error{kerr.NotLeaderForPartition, kerr.RequestTimedOut, kerr.NotEnoughReplicas, kerr.LeaderNotAvailable, kerr.NotEnoughReplicasAfterAppend} {
		t.Run(code.Message, func(t *testing.T) {
			c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
			p := newProducer(t, c, kpush.WithRetryBackoff(5*time.Millisecond))
			ctx := testCtx(t)
			if _, err := p.Send(ctx, &kpush.Record{Topic: "t", Value: []byte("0")}); err != nil {
				t.Fatal(err)
			}
			c.Fake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: code, Count: 3})
			const n = 200
			var wg sync.WaitGroup
			for i := 1; i <= n; i++ {
				wg.Add(1)
				p.SendAsync(ctx, &kpush.Record{Topic: "t", Value: []byte(strconv.Itoa(i))}, func(_ kpush.Result, err error) {
					defer wg.Done()
					if err != nil {
						t.Errorf("record %d: %v", i, err)
					}
				})
			}
			wg.Wait()
			got, err := c.ReadAll(ctx, "t")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != n+1 {
				t.Fatalf("read %d records, want %d (duplicates or loss)", len(got), n+1)
			}
			for i, r := range got {
				if string(r.Value) != strconv.Itoa(i) {
					t.Fatalf("offset %d holds %s, want %d", i, r.Value, i)
				}
			}
			if p.Stats().Retries == 0 {
				t.Fatal("no retries counted")
			}
		})
	}
}

// TestSend_DeliveryTimeoutWhenBrokerUnreachable: records fail with
// ErrDeliveryTimeout, as not written, when no broker ever answers.
func TestSend_DeliveryTimeoutWhenBrokerUnreachable(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	p := newProducer(t, c, kpush.WithRequestTimeout(200*time.Millisecond), kpush.WithDeliveryTimeout(500*time.Millisecond), kpush.WithDialTimeout(100*time.Millisecond))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "t"}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	start := time.Now()
	_, err := p.Send(ctx, &kpush.Record{Topic: "t"})
	checkErr(t, err, kpush.ErrNotWritten, kpush.ErrDeliveryTimeout)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v", d)
	}
}

// TestSend_RequestTimeoutIsUnknown: a response that never comes makes the
// outcome unknown once the delivery timeout passes — at the delivery
// deadline (plus deadlineSlack), not when the request's own timeout would
// end, and never before the deadline.
func TestSend_RequestTimeoutIsUnknown(t *testing.T) {
	const delivery = 300 * time.Millisecond
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	p := newProducer(t, c, kpush.WithRequestTimeout(100*time.Millisecond), kpush.WithDeliveryTimeout(delivery), kpush.WithRetryBackoff(10*time.Millisecond))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "t"}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	holdProduce(c, release)
	start := time.Now()
	_, err := p.Send(ctx, &kpush.Record{Topic: "t"})
	took := time.Since(start)
	checkErr(t, err, kpush.ErrOutcomeUnknown, kpush.ErrDeliveryTimeout)
	if took < delivery {
		t.Errorf("outcome after %v, before the %v delivery timeout", took, delivery)
	}
	if bound := delivery + deadlineSlack(); took > bound {
		failUnlessAwaiting(t, "defect8", "outcome after %v, want at most %v (delivery timeout + slack)", took, bound)
	}
}

// TestClose_FailsBufferedRecords: Close with an expired ctx gives every
// record an outcome and returns.
func TestClose_FailsBufferedRecords(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	p := newProducer(t, c, kpush.WithMaxInflight(1))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "t"}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	holdProduce(c, release)
	const n = 100
	errs := make(chan error, n)
	for i := range n {
		p.SendAsync(ctx, &kpush.Record{Topic: "t"}, func(_ kpush.Result, err error) { errs <- err })
		if i == 0 { // the first record alone in flight, the rest buffered behind it
			waitFor(t, func() bool { return p.Stats().InflightRequests == 1 })
		}
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := p.Close(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v", err)
	}
	var unknown, notWritten int
	for range n {
		err := <-errs
		switch {
		case errors.Is(err, kpush.ErrOutcomeUnknown):
			unknown++
		case errors.Is(err, kpush.ErrNotWritten):
			checkErr(t, err, kpush.ErrNotWritten, kpush.ErrClosed)
			notWritten++
		default:
			t.Fatalf("record outcome %v", err)
		}
	}
	if unknown != 1 || notWritten != n-1 {
		t.Fatalf("unknown %d, not written %d; want the one in-flight record unknown", unknown, notWritten)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatal("condition not met in 10s")
		}
	}
}

// TestSend_ProducerIDAuthorizationFailsFast: a cluster that refuses
// InitProducerID fails records at once with the broker's error, not after
// the delivery timeout.
func TestSend_ProducerIDAuthorizationFailsFast(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	c.Fake().ControlKey(int16(kmsg.InitProducerID), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake().KeepControl()
		resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
		return resp, nil, true
	})
	p := newProducer(t, c)
	ctx := testCtx(t)
	start := time.Now()
	_, err := p.Send(ctx, &kpush.Record{Topic: "t"})
	checkErr(t, err, kpush.ErrNotWritten, kerr.ClusterAuthorizationFailed)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v", d)
	}
}

// TestSendAsync_CallbackSendsAgainWhenFull: a callback may produce again
// (chained produce) even when its own record filled the buffer.
func TestSendAsync_CallbackSendsAgainWhenFull(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithBrokers(1), kafkatest.WithTopic("cb", 1))
	p := newProducer(t, c, kpush.WithMaxBufferedRecords(1))
	done := make(chan error, 1)
	p.SendAsync(context.Background(), &kpush.Record{Topic: "cb", Value: []byte("a")}, func(_ kpush.Result, err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		p.SendAsync(ctx, &kpush.Record{Topic: "cb", Value: []byte("b")}, func(_ kpush.Result, err error) { done <- err })
	})
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("chained SendAsync from callback failed: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("hung")
	}
}
