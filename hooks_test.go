package kpush_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestWithHooks_RejectsNonHook: a value implementing no Hook interface is
// a configuration error naming the option.
func TestWithHooks_RejectsNonHook(t *testing.T) {
	for _, h := range []kpush.Hook{nil, 42, struct{}{}} {
		_, err := kpush.New(kpush.WithBrokers("127.0.0.1:9092"), kpush.WithHooks(h))
		var ce *kpush.ConfigError
		if !errors.As(err, &ce) || ce.Option != "WithHooks" || !errors.Is(err, kpush.ErrInvalidConfig) {
			t.Errorf("New(WithHooks(%T)) = %v, want a *ConfigError for WithHooks", h, err)
		}
	}
}

// TestCauseOf_Bounded: causes map to short fixed names, kpush's own first.
// asKerr is an error standing for a Kafka error through its own As method
// (as errors.As honours): CauseOf must name it as it did with errors.As.
type asKerr struct{ ke *kerr.Error }

func (e asKerr) Error() string { return "as " + e.ke.Message }

func (e asKerr) As(target any) bool {
	if p, ok := target.(**kerr.Error); ok {
		*p = e.ke
		return true
	}
	return false
}

func TestCauseOf_Bounded(t *testing.T) {
	pe := func(unknown bool, err error) error {
		return &kpush.ProduceError{Topic: "t", Partition: 0, Unknown: unknown, Err: err}
	}
	for _, c := range []struct {
		err     error
		cause   string
		outcome kpush.Outcome
	}{
		{nil, "", kpush.OutcomeAcked},
		{pe(false, kpush.ErrBufferFull), "buffer_full", kpush.OutcomeNotWritten},
		{pe(true, fmt.Errorf("%w: %w", kpush.ErrDeliveryTimeout, kerr.RequestTimedOut)), "delivery_timeout", kpush.OutcomeUnknown},
		{pe(false, kerr.NotEnoughReplicas), "not_enough_replicas", kpush.OutcomeNotWritten},
		{pe(true, context.Canceled), "canceled", kpush.OutcomeUnknown},
		{pe(false, errors.New("something")), "other", kpush.OutcomeNotWritten},
		{pe(false, asKerr{kerr.NotLeaderForPartition}), "not_leader_for_partition", kpush.OutcomeNotWritten},
		{pe(false, fmt.Errorf("wrapped: %w", asKerr{kerr.NotLeaderForPartition})), "not_leader_for_partition", kpush.OutcomeNotWritten},
	} {
		if got := kpush.CauseOf(c.err); got != c.cause {
			t.Errorf("CauseOf(%v) = %q, want %q", c.err, got, c.cause)
		}
		if got := kpush.OutcomeOf(c.err); got != c.outcome {
			t.Errorf("OutcomeOf(%v) = %v, want %v", c.err, got, c.outcome)
		}
	}
}

// TestHooks_RecordEvents: every record gets send, then buffered (if it
// was buffered), then exactly one done with the same pointer, its outcome
// and size; a header the send hook adds is what is written.
func TestHooks_RecordEvents(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("hr", 3))
	h := newRecorder()
	h.header = "traceparent"
	p := newProducer(t, c, kpush.WithHooks(h))
	ctx := testCtx(t)
	const nSync, nAsync = 20, 30
	var wantBytes int
	for i := range nSync {
		if _, err := p.Send(ctx, &kpush.Record{Topic: "hr", Value: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i := range nAsync {
		wg.Add(1)
		p.SendAsync(ctx, &kpush.Record{Topic: "hr", Key: []byte("k"), Value: []byte(strconv.Itoa(i))}, func(_ kpush.Result, err error) {
			defer wg.Done()
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// Failures before buffering: no topic (sync), closed later (async).
	bad := &kpush.Record{Value: []byte("x")}
	if _, err := p.Send(ctx, bad); !errors.Is(err, kpush.ErrNoTopic) {
		t.Fatalf("Send without topic: %v", err)
	}
	if len(bad.Headers) != 0 {
		t.Fatalf("the caller's record got headers %v; the hook must see a copy", bad.Headers)
	}
	p.SendAsync(ctx, nil, nil) // no record: no hooks
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	h.checkPairing(t)
	h.mu.Lock()
	defer h.mu.Unlock()
	const total = nSync + nAsync + 1
	if h.sends != total || len(h.done) != total || len(h.buffered) != nSync+nAsync {
		t.Fatalf("%d sends, %d buffered, %d done; want %d, %d, %d", h.sends, len(h.buffered), len(h.done), total, nSync+nAsync, total)
	}
	for _, ev := range h.buffered {
		wantBytes += ev.Bytes
		if ev.Topic != "hr" || ev.Partition < 0 || ev.Bytes <= 0 {
			t.Errorf("buffered event %+v", ev)
		}
	}
	var acked, notWritten, gotBytes int
	for _, d := range h.done {
		ev, seq := d.ev, d.seq
		switch ev.Outcome() {
		case kpush.OutcomeAcked:
			acked++
			gotBytes += ev.Bytes
			if len(seq) != 3 || seq[0] != "send" || seq[1] != "buffered" || seq[2] != "done" {
				t.Errorf("record %q: events %v, want send, buffered, done", d.value, seq)
			}
			if ev.Result.Offset < 0 || ev.Partition != ev.Result.Partition || ev.Elapsed <= 0 {
				t.Errorf("done event %+v", ev)
			}
		case kpush.OutcomeNotWritten:
			notWritten++
			if d.value != "x" || kpush.CauseOf(ev.Err) != "no_topic" || ev.Partition != -1 {
				t.Errorf("failed done event %+v", ev)
			}
			if len(seq) != 2 || seq[0] != "send" || seq[1] != "done" {
				t.Errorf("failed record: events %v, want send, done", seq)
			}
		default:
			t.Errorf("unexpected outcome: %+v", ev)
		}
	}
	if acked != nSync+nAsync || notWritten != 1 || gotBytes != wantBytes {
		t.Fatalf("%d acked, %d not written, %d bytes done; want %d, 1, %d", acked, notWritten, gotBytes, nSync+nAsync, wantBytes)
	}
	recs, err := c.ReadAll(ctx, "hr")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if len(r.Headers) != 1 || r.Headers[0].Key != "traceparent" {
			t.Fatalf("record %q in the log has headers %v, want the injected one", r.Value, r.Headers)
		}
	}
	if len(recs) != nSync+nAsync {
		t.Fatalf("%d records in the log, want %d", len(recs), nSync+nAsync)
	}
}

// TestHooks_RequestEvents: every request written is answered once, and
// the requests carry exactly the records sent.
func TestHooks_RequestEvents(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithBrokers(2), kafkatest.WithTopic("hq", 4))
	h := newRecorder()
	p := newProducer(t, c, kpush.WithHooks(h))
	ctx := testCtx(t)
	const n = 40
	for i := range n {
		if _, err := p.Send(ctx, &kpush.Record{Topic: "hq", Key: []byte(strconv.Itoa(i)), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	// A response can be handled before the sender loop's OnRequestWritten:
	// Close waits for the loops.
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.written) != len(h.answered) || len(h.written) == 0 {
		t.Fatalf("%d requests written, %d answered", len(h.written), len(h.answered))
	}
	var wrote, answered, bytes int
	for _, ev := range h.written {
		wrote += ev.Records
		bytes += ev.Bytes
		if ev.Err != nil || ev.Broker.NodeID < 0 || ev.Broker.Addr == "" || ev.Batches < 1 {
			t.Errorf("written event %+v", ev)
		}
	}
	for _, ev := range h.answered {
		answered += ev.Records
		bytes -= ev.Bytes
		if ev.Err != nil || ev.Latency <= 0 || ev.Broker.NodeID < 0 {
			t.Errorf("answered event %+v", ev)
		}
	}
	if wrote != n || answered != n || bytes != 0 {
		t.Fatalf("requests wrote %d records and answered %d (bytes differ by %d); want %d each", wrote, answered, bytes, n)
	}
	if len(h.retries) != 0 || len(h.throttle) != 0 {
		t.Fatalf("%d retries, %d throttles without faults", len(h.retries), len(h.throttle))
	}
}

// TestHooks_ThrottleAndRetry: throttled, rejected answers are reported as
// throttles and retries with their cause.
func TestHooks_ThrottleAndRetry(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("ht", 1))
	h := newRecorder()
	p := newProducer(t, c, kpush.WithHooks(h), kpush.WithRetryBackoff(5*time.Millisecond))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "ht", Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	const faults = 3
	var mu sync.Mutex
	n := 0
	c.Fake().ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake().KeepControl()
		mu.Lock()
		defer mu.Unlock()
		if n == faults {
			return nil, nil, false
		}
		n++
		return rejectProduce(req.(*kmsg.ProduceRequest), kerr.NotEnoughReplicas, 10), nil, true
	})
	if _, err := p.Send(ctx, &kpush.Record{Topic: "ht", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.throttle) != faults || len(h.retries) != faults {
		t.Fatalf("%d throttles, %d retries; want %d each", len(h.throttle), len(h.retries), faults)
	}
	for i := range faults {
		if th := h.throttle[i]; th.Duration != 10*time.Millisecond || th.Broker.NodeID < 0 {
			t.Errorf("throttle %+v", th)
		}
		if r := h.retries[i]; r.Topic != "ht" || r.Partition != 0 || r.Records != 1 || !errors.Is(r.Cause, kerr.NotEnoughReplicas) || kpush.CauseOf(r.Cause) != "not_enough_replicas" {
			t.Errorf("retry %+v", r)
		}
	}
}

// TestHooks_Connections: a produce connection cut by the broker is
// reported closed with its cause and a new one opened; after Close every
// opened connection was closed; a broker that refuses connections is
// reported as failed attempts.
func TestHooks_Connections(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("hc", 1))
	h := newRecorder()
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...), kpush.WithHooks(h), kpush.WithRetryBackoff(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "hc", Value: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	cut := false // the cluster's goroutine only
	c.Fake().ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if cut {
			return nil, nil, false
		}
		cut = true
		return nil, errCut, true
	})
	if _, err := p.Send(ctx, &kpush.Record{Topic: "hc", Value: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	h.waitEvent(t, "closed")
	h.mu.Lock()
	sinkOpened := 0
	for _, ev := range h.opened {
		if ev.Broker.NodeID >= 0 {
			sinkOpened++
		}
	}
	cutSeen := false
	for _, ev := range h.closed {
		cutSeen = cutSeen || (ev.Broker.NodeID >= 0 && ev.Err != nil)
	}
	h.mu.Unlock()
	if sinkOpened < 2 || !cutSeen {
		t.Fatalf("%d produce connections opened, cut reported: %v; want 2 and true", sinkOpened, cutSeen)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	if len(h.opened) != len(h.closed) || len(h.failed) != 0 {
		t.Errorf("after Close: %d opened, %d closed, %d failed; want opened = closed, none failed", len(h.opened), len(h.closed), len(h.failed))
	}
	h.mu.Unlock()

	// Nothing listens on a closed listener's port.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	h2 := newRecorder()
	p3, err := kpush.New(kpush.WithBrokers(dead), kpush.WithHooks(h2), kpush.WithRetryBackoff(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	p3.SendAsync(sctx, &kpush.Record{Topic: "hc", Value: []byte("x")}, nil)
	h2.waitEvent(t, "failed")
	cancel()
	p3.Close(ctx)
	h2.mu.Lock()
	defer h2.mu.Unlock()
	if ev := h2.failed[0]; ev.Broker.Addr != dead || ev.Broker.NodeID != -1 || ev.Err == nil {
		t.Fatalf("failed event %+v, want %s, node -1, an error", ev, dead)
	}
}

// TestHooks_EpochBump: a broker that lost the producer's state makes kpush
// bump the epoch, reported with the old and new epoch and the cause.
func TestHooks_EpochBump(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("hb", 1))
	h := newRecorder()
	p := newProducer(t, c, kpush.WithHooks(h), kpush.WithRetryBackoff(5*time.Millisecond))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "hb", Value: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	c.Fake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "hb", Err: kerr.UnknownProducerID})
	if _, err := p.Send(ctx, &kpush.Record{Topic: "hb", Value: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	h.waitEvent(t, "bump")
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.bumps) != 1 {
		t.Fatalf("%d epoch bumps reported, want 1", len(h.bumps))
	}
	if ev := h.bumps[0]; (ev.Epoch == ev.OldEpoch && ev.ProducerID == ev.OldProducerID) || ev.ProducerID < 0 || !errors.Is(ev.Cause, kerr.UnknownProducerID) {
		t.Fatalf("bump %+v", ev)
	}
}

// TestHooks_Auth: a SASL login is reported with its mechanism; a wrong
// password as a failure matching ErrAuthentication.
func TestHooks_Auth(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("ha", 1), kafkatest.WithSASL(kafkatest.SASLPlain, testUser, testSecret))
	h := newRecorder()
	p := newProducer(t, c, kpush.WithHooks(h), kpush.WithSASL(kpush.SASLPlain(testUser, testSecret)))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "ha", Value: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	ok := len(h.auths) >= 2 // the metadata and the produce connection
	for _, ev := range h.auths {
		ok = ok && ev.Err == nil && ev.Mechanism == "PLAIN" && !ev.Reauth
	}
	h.mu.Unlock()
	if !ok {
		t.Fatalf("auth events %+v, want successful PLAIN logins", h.auths)
	}

	h2 := newRecorder()
	p2 := newProducer(t, c, kpush.WithHooks(h2), kpush.WithSASL(kpush.SASLPlain(testUser, "wrong")))
	if _, err := p2.Send(ctx, &kpush.Record{Topic: "ha", Value: []byte("b")}); !errors.Is(err, kpush.ErrAuthentication) {
		t.Fatalf("Send with a wrong password: %v", err)
	}
	h2.mu.Lock()
	defer h2.mu.Unlock()
	if len(h2.auths) == 0 || !errors.Is(h2.auths[0].Err, kpush.ErrAuthentication) || h2.auths[0].Mechanism != "PLAIN" {
		t.Fatalf("auth events %+v, want a PLAIN failure", h2.auths)
	}
	if len(h2.failed) == 0 || !errors.Is(h2.failed[0].Err, kpush.ErrAuthentication) {
		t.Fatalf("failed connections %+v, want one refused login", h2.failed)
	}
}

// reenter is a hook that, from the engine's goroutines, calls back into
// the producer: a hook run under a partition, sink or connection lock
// would deadlock here.
type reenter struct {
	p     atomic.Pointer[kpush.Producer]
	left  [6]atomic.Int32 // re-entrant sends still to make, per hook kind
	calls atomic.Int32
}

func (h *reenter) again(kind int) {
	h.calls.Add(1)
	p := h.p.Load()
	if p == nil || h.left[kind].Add(-1) < 0 {
		return
	}
	_ = p.Stats()
	p.SendAsync(context.Background(), &kpush.Record{Topic: "hre", Value: []byte("again")}, nil)
}

func (h *reenter) OnRequestWritten(kpush.RequestWrittenEvent)   { h.again(0) }
func (h *reenter) OnRequestAnswered(kpush.RequestAnsweredEvent) { h.again(1) }
func (h *reenter) OnThrottle(kpush.ThrottleEvent)               { h.again(2) }
func (h *reenter) OnRetry(kpush.RetryEvent)                     { h.again(3) }
func (h *reenter) OnConnOpened(kpush.ConnEvent)                 { h.again(4) }
func (h *reenter) OnConnClosed(kpush.ConnEvent)                 { h.again(5) }

// TestHooks_RunOutsideLocks: engine-side hooks that send again into the
// same partition and read Stats complete (no lock is held around them),
// across retries, throttles and a cut connection.
func TestHooks_RunOutsideLocks(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("hre", 1))
	h := &reenter{}
	for i := range h.left {
		h.left[i].Store(5)
	}
	// Not newProducer: after a deadlock its cleanup's Close would hang too.
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...), kpush.WithHooks(h), kpush.WithRetryBackoff(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The topic's metadata first: a send of a topic kpush knows nothing
	// about would wait for the metadata goroutine, which runs hooks too.
	if _, err := p.Send(ctx, &kpush.Record{Topic: "hre", Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	h.p.Store(p)
	n := 0 // the cluster's goroutine only
	c.Fake().ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake().KeepControl()
		n++
		switch {
		case n == 2:
			return nil, errCut, true
		case n <= 5:
			return rejectProduce(req.(*kmsg.ProduceRequest), kerr.NotEnoughReplicas, 1), nil, true
		}
		return nil, nil, false
	})
	done := make(chan error, 1)
	go func() {
		for i := range 10 {
			if _, err := p.Send(ctx, &kpush.Record{Topic: "hre", Value: []byte(strconv.Itoa(i))}); err != nil {
				done <- fmt.Errorf("record %d: %w", i, err)
				return
			}
		}
		done <- p.Flush(ctx)
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%v (a hook deadlocked?)", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("sends did not finish within 20s: a hook deadlocked (left running)")
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i, what := range []string{"written", "answered", "throttle", "retry", "opened", "closed"} {
		if h.left[i].Load() == 5 {
			t.Errorf("no %s hook called back into the producer", what)
		}
	}
}

// SendCancelable (the Python bridge's send) runs the record hooks like
// SendAsync: send, buffered, done — done once, also for a canceled record.
func TestHooks_SendCancelableRecordEvents(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("hc", 3))
	h := newRecorder()
	p := newProducer(t, c, kpush.WithHooks(h), kpush.WithLinger(time.Minute))
	ctx := testCtx(t)
	const n = 10
	var wg sync.WaitGroup
	var hs []*kpush.SendHandle
	for i := range n {
		wg.Add(1)
		hs = append(hs, p.SendCancelable(ctx, &kpush.Record{Topic: "hc", Value: []byte(strconv.Itoa(i))}, func(_ kpush.Result, err error) {
			defer wg.Done()
			if !errors.Is(err, kpush.ErrNotWritten) {
				t.Errorf("canceled handle: %v, want ErrNotWritten", err)
			}
		}))
	}
	for _, s := range hs {
		s.Cancel()
	}
	wg.Wait()
	h.checkPairing(t)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sends != n || len(h.buffered) != n || len(h.done) != n {
		t.Fatalf("%d sends, %d buffered, %d done; want %d each", h.sends, len(h.buffered), len(h.done), n)
	}
	for _, d := range h.done {
		if ev := d.ev; ev.Outcome() != kpush.OutcomeNotWritten || !errors.Is(ev.Err, context.Canceled) {
			t.Errorf("done event %+v, want not written, canceled", ev)
		}
		if seq := d.seq; len(seq) != 3 || seq[2] != "done" {
			t.Errorf("record %q: events %v, want send, buffered, done", d.value, seq)
		}
	}
}
