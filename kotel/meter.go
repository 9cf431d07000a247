package kotel

// Goroutines and ownership: the meter starts no goroutine. Its hooks run
// on kpush's goroutines (see each kpush Hook… interface) concurrently;
// the instruments are safe for concurrent use, and attrCache is a
// sync.Map whose entries are immutable once stored. No lock is held
// while an OTel instrument is called.

import (
	"context"
	"net"
	"strconv"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/kpush/kpush"
)

// Instrument names. The first two are the OpenTelemetry messaging
// semantic conventions' own; the others are kpush's, in the same style.
const (
	MetricSentMessages      = "messaging.client.sent.messages"      // counter, {message}: every record, at its outcome
	MetricOperationDuration = "messaging.client.operation.duration" // histogram, s: Send to outcome
	MetricRetriedMessages   = "kpush.producer.retried.messages"     // counter, {message}: records in retried batches
	MetricRequestDuration   = "kpush.producer.request.duration"     // histogram, s: produce request round trip
	MetricThrottleDuration  = "kpush.producer.throttle.duration"    // histogram, s: throttle a broker asked for
	MetricBufferedBytes     = "kpush.producer.buffered.bytes"       // gauge, By (ObserveProducer)
	MetricBufferedMessages  = "kpush.producer.buffered.messages"    // gauge, {message} (ObserveProducer)
	MetricInflightRequests  = "kpush.producer.inflight.requests"    // gauge, {request} (ObserveProducer)
	MetricConnections       = "kpush.producer.connections"          // counter, {connection}: by kpush.connection.event
)

// AttrOutcome is the attribute key of a record's outcome category, a
// kpush.Outcome's String value: "acked", "not_written" or "unknown".
const AttrOutcome = attribute.Key("kpush.outcome")

// AttrConnEvent is the attribute key of a connection event in
// kpush.producer.connections: "opened", "closed" or "failed".
const AttrConnEvent = attribute.Key("kpush.connection.event")

// durationBuckets are the bucket boundaries, in seconds, the semantic
// conventions advise for messaging.client.operation.duration.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// Attributes every messaging.* measurement and span carries.
var (
	attrSystem  = semconv.MessagingSystemKafka
	attrOpName  = semconv.MessagingOperationName("send")
	attrOpType  = semconv.MessagingOperationTypeSend
	attrUnknown = semconv.ErrorTypeOther.Value.AsString()
)

// meter holds the instruments; it implements kpush's HookRecordDone,
// HookRetry, HookRequestAnswered, HookThrottle and the HookConn… hooks.
type meter struct {
	sent     metric.Int64Counter
	duration metric.Float64Histogram
	retried  metric.Int64Counter
	request  metric.Float64Histogram
	throttle metric.Float64Histogram
	conns    metric.Int64Counter

	attrs []attribute.KeyValue // WithAttributes, on every measurement

	meter metric.Meter // for ObserveProducer

	// recordAttrs caches, per recordKey, the measurement options of a
	// record outcome, so an outcome allocates nothing once its attribute
	// combination was seen. brokerAttrs does the same per brokerKey.
	recordAttrs sync.Map // recordKey → *recordOpts
	brokerAttrs sync.Map // brokerKey → *brokerOpts
}

var (
	_ kpush.HookRecordDone      = (*meter)(nil)
	_ kpush.HookRetry           = (*meter)(nil)
	_ kpush.HookRequestAnswered = (*meter)(nil)
	_ kpush.HookThrottle        = (*meter)(nil)
	_ kpush.HookConnOpened      = (*meter)(nil)
	_ kpush.HookConnClosed      = (*meter)(nil)
	_ kpush.HookConnFailed      = (*meter)(nil)
)

type recordKey struct {
	topic     string
	partition int32
	cause     string
	outcome   kpush.Outcome
}

type recordOpts struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

type brokerKey struct {
	addr  string
	cause string
	event string // AttrConnEvent's value, "" outside kpush.producer.connections
}

type brokerOpts struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

func newMeter(mp metric.MeterProvider, attrs []attribute.KeyValue) (*meter, error) {
	m := &meter{meter: mp.Meter(scopeName, metric.WithSchemaURL(semconv.SchemaURL)), attrs: attrs}
	var err error
	if m.sent, err = m.meter.Int64Counter(MetricSentMessages,
		metric.WithUnit("{message}"),
		metric.WithDescription("Number of messages producer attempted to send to the broker."),
	); err != nil {
		return nil, err
	}
	if m.duration, err = m.meter.Float64Histogram(MetricOperationDuration,
		metric.WithUnit("s"),
		metric.WithDescription("Duration of messaging operation initiated by a producer or consumer client."),
		metric.WithExplicitBucketBoundaries(durationBuckets...),
	); err != nil {
		return nil, err
	}
	if m.retried, err = m.meter.Int64Counter(MetricRetriedMessages,
		metric.WithUnit("{message}"),
		metric.WithDescription("Number of messages in batches the producer sends again after a retriable failure."),
	); err != nil {
		return nil, err
	}
	if m.request, err = m.meter.Float64Histogram(MetricRequestDuration,
		metric.WithUnit("s"),
		metric.WithDescription("Time from writing a produce request to a broker to its answer or failure."),
		metric.WithExplicitBucketBoundaries(durationBuckets...),
	); err != nil {
		return nil, err
	}
	if m.throttle, err = m.meter.Float64Histogram(MetricThrottleDuration,
		metric.WithUnit("s"),
		metric.WithDescription("Time a broker asked the producer to wait before its next request (quota throttling)."),
		metric.WithExplicitBucketBoundaries(durationBuckets...),
	); err != nil {
		return nil, err
	}
	if m.conns, err = m.meter.Int64Counter(MetricConnections,
		metric.WithUnit("{connection}"),
		metric.WithDescription("Broker connections opened, closed, or that failed to open (produce and metadata connections)."),
	); err != nil {
		return nil, err
	}
	return m, nil
}

// OnRecordDone counts the record and records its send-to-outcome time.
func (m *meter) OnRecordDone(ev kpush.RecordDoneEvent) {
	ctx := context.Background()
	o := m.recordOpts(ev.Topic, ev.Partition, ev.Err)
	m.sent.Add(ctx, 1, o.add...)
	m.duration.Record(ctx, ev.Elapsed.Seconds(), o.record...)
}

// OnRetry counts the records of a batch that will be sent again.
func (m *meter) OnRetry(ev kpush.RetryEvent) {
	o := m.recordOpts(ev.Topic, ev.Partition, ev.Cause)
	m.retried.Add(context.Background(), int64(ev.Records), o.add...)
}

// OnRequestAnswered records a produce request's round trip.
func (m *meter) OnRequestAnswered(ev kpush.RequestAnsweredEvent) {
	o := m.brokerOpts(ev.Broker.Addr, ev.Err, "")
	m.request.Record(context.Background(), ev.Latency.Seconds(), o.record...)
}

// OnThrottle records a broker's throttle time.
func (m *meter) OnThrottle(ev kpush.ThrottleEvent) {
	o := m.brokerOpts(ev.Broker.Addr, nil, "")
	m.throttle.Record(context.Background(), ev.Duration.Seconds(), o.record...)
}

// OnConnOpened counts an opened connection.
func (m *meter) OnConnOpened(ev kpush.ConnEvent) {
	m.conns.Add(context.Background(), 1, m.brokerOpts(ev.Broker.Addr, nil, "opened").add...)
}

// OnConnClosed counts a closed connection; its reason is not an
// attribute (every close has one, including kpush's own).
func (m *meter) OnConnClosed(ev kpush.ConnEvent) {
	m.conns.Add(context.Background(), 1, m.brokerOpts(ev.Broker.Addr, nil, "closed").add...)
}

// OnConnFailed counts a connection that could not be opened, with
// error.type (for example "authentication").
func (m *meter) OnConnFailed(ev kpush.ConnEvent) {
	m.conns.Add(context.Background(), 1, m.brokerOpts(ev.Broker.Addr, ev.Err, "failed").add...)
}

// recordOpts returns the cached options for a record measurement.
func (m *meter) recordOpts(topic string, partition int32, err error) *recordOpts {
	k := recordKey{topic: topic, partition: partition, outcome: kpush.OutcomeOf(err)}
	if err != nil {
		k.cause = errorType(err)
	}
	if o, ok := m.recordAttrs.Load(k); ok {
		return o.(*recordOpts)
	}
	attrs := make([]attribute.KeyValue, 0, 7+len(m.attrs))
	attrs = append(attrs, m.attrs...)
	attrs = append(attrs, attrSystem, attrOpName, attrOpType, AttrOutcome.String(k.outcome.String()))
	if topic != "" {
		attrs = append(attrs, semconv.MessagingDestinationName(topic))
	}
	if partition >= 0 {
		attrs = append(attrs, semconv.MessagingDestinationPartitionID(strconv.Itoa(int(partition))))
	}
	if k.cause != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(k.cause))
	}
	opt := metric.WithAttributeSet(attribute.NewSet(attrs...))
	o, _ := m.recordAttrs.LoadOrStore(k, &recordOpts{add: []metric.AddOption{opt}, record: []metric.RecordOption{opt}})
	return o.(*recordOpts)
}

// brokerOpts returns the cached options for a broker measurement.
func (m *meter) brokerOpts(addr string, err error, event string) *brokerOpts {
	k := brokerKey{addr: addr, event: event}
	if err != nil {
		k.cause = errorType(err)
	}
	if o, ok := m.brokerAttrs.Load(k); ok {
		return o.(*brokerOpts)
	}
	attrs := make([]attribute.KeyValue, 0, 5+len(m.attrs))
	attrs = append(attrs, m.attrs...)
	attrs = append(attrs, attrSystem)
	if event != "" {
		attrs = append(attrs, AttrConnEvent.String(event))
	}
	if host, port, err := net.SplitHostPort(addr); err == nil {
		attrs = append(attrs, semconv.ServerAddress(host))
		if n, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, semconv.ServerPort(n))
		}
	} else if addr != "" {
		attrs = append(attrs, semconv.ServerAddress(addr))
	}
	if k.cause != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(k.cause))
	}
	opt := metric.WithAttributeSet(attribute.NewSet(attrs...))
	o, _ := m.brokerAttrs.LoadOrStore(k, &brokerOpts{add: []metric.AddOption{opt}, record: []metric.RecordOption{opt}})
	return o.(*brokerOpts)
}

// errorType is the error.type value of an error: kpush.CauseOf's bounded
// name, with the semantic conventions' "_OTHER" for an unknown cause.
func errorType(err error) string {
	c := kpush.CauseOf(err)
	if c == "other" {
		return attrUnknown
	}
	return c
}
