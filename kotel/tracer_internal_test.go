package kotel

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kpush/kpush"
)

// TestTracer_TableEmptyAfterOutcomes: after every record's outcome the
// record → span table holds nothing (a leak would keep records and spans
// alive for the producer's life).
func TestTracer_TableEmptyAfterOutcomes(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tr := newTracer(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)), propagation.TraceContext{}, true, nil)
	recs := make([]*kpush.Record, 200)
	for i := range recs {
		recs[i] = &kpush.Record{Topic: "t"}
		tr.OnRecordSend(context.Background(), recs[i])
	}
	for _, r := range recs {
		tr.OnRecordDone(kpush.RecordDoneEvent{Record: r, Topic: "t", Partition: 0})
	}
	n := 0
	for i := range tr.shards {
		n += len(tr.shards[i].m)
	}
	if n != 0 || len(rec.Ended()) != len(recs) {
		t.Errorf("%d entries left, %d spans ended; want 0 and %d", n, len(rec.Ended()), len(recs))
	}
}
