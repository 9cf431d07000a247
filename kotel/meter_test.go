package kotel_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kotel"
)

// TestMetrics_KnownTrafficAndFault: five acknowledged records, one the
// broker refuses (INVALID_RECORD) and one invalid record are counted in
// messaging.client.sent.messages and messaging.client.operation.duration
// with the semantic conventions' attributes, error.type and kpush.outcome
// on the failures only.
func TestMetrics_KnownTrafficAndFault(t *testing.T) {
	e := newEnv(t, kotel.WithTracing(false))
	for i := range 5 {
		if _, err := e.p.Send(e.ctx, &kpush.Record{Topic: "t", Value: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	e.failNextProduce(kerr.InvalidRecord)
	if _, err := e.p.Send(e.ctx, &kpush.Record{Topic: "t", Value: []byte("bad")}); !errors.Is(err, kerr.InvalidRecord) {
		t.Fatalf("refused record: %v, want INVALID_RECORD", err)
	}
	if _, err := e.p.Send(e.ctx, &kpush.Record{Topic: "no such topic!"}); !errors.Is(err, kpush.ErrInvalidTopic) {
		t.Fatalf("invalid topic: %v, want ErrInvalidTopic", err)
	}

	rm := e.collect(t)
	common := []attribute.KeyValue{semconv.MessagingSystemKafka, semconv.MessagingOperationName("send"), semconv.MessagingOperationTypeSend}
	acked := append(common[:3:3], semconv.MessagingDestinationName("t"), semconv.MessagingDestinationPartitionID("0"), kotel.AttrOutcome.String("acked"))
	refused := append(common[:3:3], semconv.MessagingDestinationName("t"), semconv.MessagingDestinationPartitionID("0"),
		kotel.AttrOutcome.String("not_written"), semconv.ErrorTypeKey.String("invalid_record"))
	invalid := append(common[:3:3], kotel.AttrOutcome.String("not_written"), semconv.ErrorTypeKey.String("invalid_topic"))

	sent := find(t, rm, kotel.MetricSentMessages)
	if sent.Unit != "{message}" {
		t.Errorf("%s unit %q", sent.Name, sent.Unit)
	}
	for _, c := range []struct {
		name string
		want []attribute.KeyValue
		n    int64
	}{{"acked", acked, 5}, {"refused", refused, 1}, {"invalid", invalid, 1}, {"all", common, 7}} {
		if got := sumWhere(t, sent, c.want...); got != c.n {
			t.Errorf("%s %s = %d, want %d", sent.Name, c.name, got, c.n)
		}
	}
	s := sent.Data.(metricdata.Sum[int64])
	for _, dp := range s.DataPoints {
		if v, _ := dp.Attributes.Value(kotel.AttrOutcome); v.AsString() == "acked" && !lacks(dp.Attributes, semconv.ErrorTypeKey) {
			t.Errorf("acked point has error.type: %v", dp.Attributes.ToSlice())
		}
	}

	dur := find(t, rm, kotel.MetricOperationDuration)
	if dur.Unit != "s" {
		t.Errorf("%s unit %q", dur.Name, dur.Unit)
	}
	if n, sum := histWhere(t, dur, acked...); n != 5 || sum <= 0 {
		t.Errorf("%s acked: count %d sum %v, want 5 and > 0", dur.Name, n, sum)
	}
	if n, _ := histWhere(t, dur, refused...); n != 1 {
		t.Errorf("%s refused: count %d, want 1", dur.Name, n)
	}

	// Six records went out in six requests (the invalid one never did),
	// each answered: five plainly, one with partition errors.
	req := find(t, rm, kotel.MetricRequestDuration)
	if n, _ := histWhere(t, req, semconv.ServerAddress("127.0.0.1")); n < 6 {
		t.Errorf("%s count %d, want at least 6", req.Name, n)
	}
}

// TestMetrics_Throttle: a response asking for 250 ms of throttling is
// recorded in kpush.producer.throttle.duration for its broker.
func TestMetrics_Throttle(t *testing.T) {
	e := newEnv(t, kotel.WithTracing(false))
	if _, err := e.p.Send(e.ctx, &kpush.Record{Topic: "t", Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	e.answerNextProduce(0, 250)
	if _, err := e.p.Send(e.ctx, &kpush.Record{Topic: "t", Value: []byte("throttled")}); err != nil {
		t.Fatal(err)
	}
	m := find(t, e.collect(t), kotel.MetricThrottleDuration)
	if n, sum := histWhere(t, m, semconv.ServerAddress("127.0.0.1")); n != 1 || sum != 0.25 {
		t.Errorf("%s: count %d sum %v, want 1 and 0.25", m.Name, n, sum)
	}
}

// TestMetrics_ObserveProducer: while a request is held by the broker, the
// gauges read from Stats show the record buffered and the request in
// flight; after its answer both are zero.
func TestMetrics_ObserveProducer(t *testing.T) {
	e := newEnv(t, kotel.WithTracing(false))
	reg, err := e.k.ObserveProducer(e.p, semconv.MessagingClientID("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()
	if _, err := e.p.Send(e.ctx, &kpush.Record{Topic: "t", Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	arrived, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) })
	e.c.Fake().ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		close(arrived)
		<-release
		return nil, nil, false
	})
	done := make(chan error, 1)
	e.p.SendAsync(e.ctx, &kpush.Record{Topic: "t", Value: []byte("held")}, func(_ kpush.Result, err error) { done <- err })
	select {
	case <-arrived:
	case <-e.ctx.Done():
		t.Fatal("no produce request arrived")
	}
	rm := e.collect(t)
	if got := gauge(t, find(t, rm, kotel.MetricBufferedMessages)); got != 1 {
		t.Errorf("buffered messages %d, want 1", got)
	}
	if got := gauge(t, find(t, rm, kotel.MetricBufferedBytes)); got <= 0 {
		t.Errorf("buffered bytes %d, want > 0", got)
	}
	if got := gauge(t, find(t, rm, kotel.MetricInflightRequests)); got != 1 {
		t.Errorf("in-flight requests %d, want 1", got)
	}
	once.Do(func() { close(release) })
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-e.ctx.Done():
		t.Fatal("held record got no outcome")
	}
	rm = e.collect(t)
	if got := gauge(t, find(t, rm, kotel.MetricBufferedMessages)); got != 0 {
		t.Errorf("buffered messages after the answer %d, want 0", got)
	}
	if got := gauge(t, find(t, rm, kotel.MetricInflightRequests)); got != 0 {
		t.Errorf("in-flight requests after the answer %d, want 0", got)
	}
}

// connFailed signals each failed connection; installed after kotel's
// hooks, it runs after kotel saw the same event.
type connFailed chan struct{}

func (c connFailed) OnConnFailed(kpush.ConnEvent) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// TestMetrics_Connections: kpush.producer.connections counts opened
// connections, the same number closed after Close, and a failed dial with
// error.type; WithAttributes is on every point.
func TestMetrics_Connections(t *testing.T) {
	app := semconv.MessagingClientID("conn-test")
	e := newEnv(t, kotel.WithTracing(false), kotel.WithAttributes(app))
	if _, err := e.p.Send(e.ctx, &kpush.Record{Topic: "t", Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := e.p.Close(e.ctx); err != nil {
		t.Fatal(err)
	}
	m := find(t, e.collect(t), kotel.MetricConnections)
	opened := sumWhere(t, m, app, kotel.AttrConnEvent.String("opened"), semconv.ServerAddress("127.0.0.1"))
	closed := sumWhere(t, m, app, kotel.AttrConnEvent.String("closed"))
	if opened < 1 || closed != opened {
		t.Errorf("%s: %d opened, %d closed; want at least 1, all closed", m.Name, opened, closed)
	}
	if n := sumWhere(t, find(t, e.collect(t), kotel.MetricSentMessages), app); n != 1 {
		t.Errorf("sent messages with the WithAttributes attribute: %d, want 1", n)
	}

	// Nothing listens on a closed listener's port: the metadata dial fails.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().(*net.TCPAddr)
	l.Close()
	failed := make(connFailed, 1)
	p, err := kpush.New(kpush.WithBrokers(dead.String()), kpush.WithHooks(append(e.k.Hooks(), failed)...))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(e.ctx)
	// SendAsync waits for the topic's metadata on its caller's goroutine
	// until sctx ends; end it once the failure was seen.
	sctx, cancel := context.WithCancel(e.ctx)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		p.SendAsync(sctx, &kpush.Record{Topic: "t", Value: []byte("x")}, func(kpush.Result, error) {})
	}()
	select {
	case <-failed:
	case <-e.ctx.Done():
		t.Fatal("no failed connection reported")
	}
	cancel()
	<-sent
	m = find(t, e.collect(t), kotel.MetricConnections)
	if n := sumWhere(t, m, app, kotel.AttrConnEvent.String("failed"), semconv.ServerPort(dead.Port)); n < 1 {
		t.Errorf("%s failed to %s: %d, want at least 1", m.Name, dead, n)
	}
	s := m.Data.(metricdata.Sum[int64])
	for _, dp := range s.DataPoints {
		if v, _ := dp.Attributes.Value(kotel.AttrConnEvent); v.AsString() == "failed" && !dp.Attributes.HasValue(semconv.ErrorTypeKey) {
			t.Errorf("failed point without error.type: %v", dp.Attributes.ToSlice())
		}
	}
}
