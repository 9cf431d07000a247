package kotel_test

import (
	"context"
	"fmt"
	"log"

	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
	"github.com/kpush/kpush/kotel"
)

// Example instruments a producer: a span per record, child of the
// caller's span, whose context travels in the record's headers to the
// consumer, and the messaging metrics. In a program the providers would
// export (OTLP, Prometheus); here they keep everything in memory.
func Example() {
	c, err := kafkatest.NewCluster(kafkatest.WithTopic("orders", 1))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))

	k, err := kotel.New(
		kotel.WithTracerProvider(tp),
		kotel.WithMeterProvider(mp),
		kotel.WithPropagator(propagation.TraceContext{}),
		kotel.WithInjectTraceContext(true),
	)
	if err != nil {
		log.Fatal(err)
	}
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...), kpush.WithHooks(k.Hooks()...))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(context.Background())

	ctx, parent := tp.Tracer("shop").Start(context.Background(), "checkout")
	if _, err := p.Send(ctx, &kpush.Record{Topic: "orders", Value: []byte("order 1")}); err != nil {
		log.Fatal(err)
	}
	parent.End()

	send := spans.Ended()[0]
	fmt.Println(send.Name(), send.SpanKind(), send.Parent().SpanID() == parent.SpanContext().SpanID())

	// The consumer side: read the record and continue the trace from its
	// headers.
	recs, err := c.ReadAll(context.Background(), "orders")
	if err != nil {
		log.Fatal(err)
	}
	var hs []kpush.Header
	for _, h := range recs[0].Headers {
		hs = append(hs, kpush.Header{Key: h.Key, Value: h.Value})
	}
	remote := trace.SpanContextFromContext(k.Extract(context.Background(), hs))
	fmt.Println(remote.SpanID() == send.SpanContext().SpanID())

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		log.Fatal(err)
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name == kotel.MetricSentMessages {
			fmt.Println(m.Name, m.Data.(metricdata.Sum[int64]).DataPoints[0].Value)
		}
	}
	// Output:
	// send orders producer true
	// true
	// messaging.client.sent.messages 1
}
