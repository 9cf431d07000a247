package kotel_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
	"github.com/kpush/kpush/kotel"
)

// env is one test's fake cluster, in-memory metric reader, span recorder,
// instrumentation and producer.
type env struct {
	c      *kafkatest.Cluster
	reader *sdkmetric.ManualReader
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	k      *kotel.Kotel
	p      *kpush.Producer
	ctx    context.Context
}

// newEnv starts a cluster with topic "t" (one partition) and a producer
// instrumented by kotel with opts (after the test providers and the W3C
// propagator).
func newEnv(t *testing.T, opts ...kotel.Option) *env {
	t.Helper()
	e := &env{
		c:      kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1)),
		reader: sdkmetric.NewManualReader(),
		spans:  tracetest.NewSpanRecorder(),
	}
	e.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(e.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(e.reader))
	k, err := kotel.New(append([]kotel.Option{
		kotel.WithMeterProvider(mp),
		kotel.WithTracerProvider(e.tp),
		kotel.WithPropagator(propagation.TraceContext{}),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	e.k = k
	p, err := kpush.New(kpush.WithBrokers(e.c.Addrs()...), kpush.WithHooks(k.Hooks()...))
	if err != nil {
		t.Fatal(err)
	}
	e.p = p
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	e.ctx = ctx
	t.Cleanup(func() {
		if err := p.Close(context.Background()); err != nil && err != kpush.ErrClosed {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

// failNextProduce makes the next produce request fail every partition
// with code (a non-retriable code fails the records at once).
func (e *env) failNextProduce(code *kerr.Error) { e.answerNextProduce(code.Code, 0) }

// answerNextProduce answers the next produce request itself, with code
// for every partition (0: acknowledged at offset 1000, without storing
// the records) and throttleMillis.
func (e *env) answerNextProduce(code int16, throttleMillis int32) {
	e.c.Fake().ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		req := r.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		resp.Version = req.Version
		resp.ThrottleMillis = throttleMillis
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = code
				sp.BaseOffset = 1000
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
}

// collect reads every metric now.
func (e *env) collect(t *testing.T) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := e.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	return rm
}

// find returns the metric called name, failing the test if it is absent.
func find(t *testing.T, rm metricdata.ResourceMetrics, name string) metricdata.Metrics {
	t.Helper()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m
			}
		}
	}
	t.Fatalf("metric %s not found", name)
	return metricdata.Metrics{}
}

// has reports whether set holds every attribute of want.
func has(set attribute.Set, want ...attribute.KeyValue) bool {
	for _, kv := range want {
		v, ok := set.Value(kv.Key)
		if !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// lacks reports whether set holds none of keys.
func lacks(set attribute.Set, keys ...attribute.Key) bool {
	for _, k := range keys {
		if set.HasValue(k) {
			return false
		}
	}
	return true
}

// sumWhere adds the points of an Int64 sum whose attributes hold want.
func sumWhere(t *testing.T, m metricdata.Metrics, want ...attribute.KeyValue) int64 {
	t.Helper()
	s, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("%s is %T, want an int64 sum", m.Name, m.Data)
	}
	var n int64
	for _, dp := range s.DataPoints {
		if has(dp.Attributes, want...) {
			n += dp.Value
		}
	}
	return n
}

// histWhere returns the total count and sum of a float64 histogram's
// points whose attributes hold want.
func histWhere(t *testing.T, m metricdata.Metrics, want ...attribute.KeyValue) (uint64, float64) {
	t.Helper()
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s is %T, want a float64 histogram", m.Name, m.Data)
	}
	var n uint64
	var sum float64
	for _, dp := range h.DataPoints {
		if has(dp.Attributes, want...) {
			n += dp.Count
			sum += dp.Sum
		}
	}
	return n, sum
}

// gauge returns the value of an int64 gauge's only point.
func gauge(t *testing.T, m metricdata.Metrics) int64 {
	t.Helper()
	g, ok := m.Data.(metricdata.Gauge[int64])
	if !ok || len(g.DataPoints) != 1 {
		t.Fatalf("%s = %#v, want an int64 gauge with one point", m.Name, m.Data)
	}
	return g.DataPoints[0].Value
}
