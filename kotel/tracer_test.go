package kotel_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kotel"
)

// attrs returns a span's attributes by key.
func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// TestTracer_SpanPerRecord: every record gets one PRODUCER span "send t",
// a child of the span in Send's ctx, with the messaging attributes, the
// partition and offset of an acknowledged record, and an error status
// naming the outcome category (plus error.type) for a refused one.
func TestTracer_SpanPerRecord(t *testing.T) {
	app := semconv.MessagingClientID("span-test")
	e := newEnv(t, kotel.WithMetrics(false), kotel.WithAttributes(app))
	ctx, parent := e.tp.Tracer("test").Start(e.ctx, "parent")
	var offsets []int64
	for i := range 3 {
		res, err := e.p.Send(ctx, &kpush.Record{Topic: "t", Value: []byte{byte(i)}})
		if err != nil {
			t.Fatal(err)
		}
		offsets = append(offsets, res.Offset)
	}
	e.failNextProduce(kerr.InvalidRecord)
	if _, err := e.p.Send(ctx, &kpush.Record{Topic: "t", Value: []byte("bad")}); !errors.Is(err, kerr.InvalidRecord) {
		t.Fatalf("refused record: %v", err)
	}
	parent.End()

	var sends []sdktrace.ReadOnlySpan
	for _, s := range e.spans.Ended() {
		if s.Name() != "parent" {
			sends = append(sends, s)
		}
	}
	if len(sends) != 4 {
		t.Fatalf("%d send spans ended, want 4", len(sends))
	}
	for i, s := range sends {
		a := attrs(s)
		if s.Name() != "send t" || s.SpanKind() != trace.SpanKindProducer {
			t.Errorf("span %d: %q kind %v, want \"send t\" PRODUCER", i, s.Name(), s.SpanKind())
		}
		if s.Parent().SpanID() != parent.SpanContext().SpanID() || s.SpanContext().TraceID() != parent.SpanContext().TraceID() {
			t.Errorf("span %d: parent %v trace %v, want the caller's span %v", i, s.Parent().SpanID(), s.SpanContext().TraceID(), parent.SpanContext().SpanID())
		}
		for _, kv := range []attribute.KeyValue{
			semconv.MessagingSystemKafka, semconv.MessagingOperationName("send"), semconv.MessagingOperationTypeSend,
			semconv.MessagingDestinationName("t"), semconv.MessagingDestinationPartitionID("0"), app,
		} {
			if a[kv.Key] != kv.Value {
				t.Errorf("span %d: %s = %v, want %v", i, kv.Key, a[kv.Key].Emit(), kv.Value.Emit())
			}
		}
		if i < 3 {
			if s.Status().Code == codes.Error || a[semconv.MessagingKafkaOffsetKey].AsInt64() != offsets[i] || a[kotel.AttrOutcome].AsString() != "acked" {
				t.Errorf("span %d: status %v offset %v outcome %v, want unset, %d, acked", i, s.Status(), a[semconv.MessagingKafkaOffsetKey].Emit(), a[kotel.AttrOutcome].Emit(), offsets[i])
			}
			continue
		}
		if s.Status().Code != codes.Error || s.Status().Description != "not_written" ||
			a[semconv.ErrorTypeKey].AsString() != "invalid_record" || a[kotel.AttrOutcome].AsString() != "not_written" {
			t.Errorf("refused span: status %v error.type %v outcome %v, want Error not_written, invalid_record", s.Status(), a[semconv.ErrorTypeKey].Emit(), a[kotel.AttrOutcome].Emit())
		}
		if len(s.Events()) == 0 || s.Events()[0].Name != "exception" {
			t.Errorf("refused span has no exception event: %v", s.Events())
		}
	}
}

// traceparent is the W3C header of a sampled span.
func traceparent(sc trace.SpanContext) string {
	return fmt.Sprintf("00-%s-%s-01", sc.TraceID(), sc.SpanID())
}

// TestTracer_InjectReadBack: with WithInjectTraceContext, each record
// read back by a franz-go consumer carries a traceparent naming its own
// span, Extract turns it into that span's context, and a header slice
// shared by the records is never written to.
func TestTracer_InjectReadBack(t *testing.T) {
	e := newEnv(t, kotel.WithMetrics(false), kotel.WithInjectTraceContext(true))
	ctx, parent := e.tp.Tracer("test").Start(e.ctx, "parent")
	shared := make([]kpush.Header, 1, 4) // spare capacity an append would write into
	shared[0] = kpush.Header{Key: "app", Value: []byte("v")}
	for i := range 3 {
		if _, err := e.p.Send(ctx, &kpush.Record{Topic: "t", Value: []byte{byte(i)}, Headers: shared}); err != nil {
			t.Fatal(err)
		}
	}
	parent.End()
	if spare := shared[:cap(shared)]; spare[1].Key != "" || spare[2].Key != "" {
		t.Errorf("the shared headers' backing array was written to: %v", spare)
	}

	recs, err := e.c.ReadAll(e.ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	var sends []sdktrace.ReadOnlySpan
	for _, s := range e.spans.Ended() {
		if s.Name() == "send t" {
			sends = append(sends, s)
		}
	}
	if len(recs) != 3 || len(sends) != 3 {
		t.Fatalf("read %d records, %d send spans; want 3 and 3", len(recs), len(sends))
	}
	for i, r := range recs {
		hs := make([]kpush.Header, len(r.Headers))
		for j, h := range r.Headers {
			hs[j] = kpush.Header{Key: h.Key, Value: h.Value}
		}
		want := traceparent(sends[i].SpanContext())
		var got string
		n := 0
		for _, h := range hs {
			if h.Key == "traceparent" {
				got, n = string(h.Value), n+1
			}
		}
		if got != want || n != 1 || hs[0].Key != "app" {
			t.Errorf("record %d headers %v: traceparent %q (%d times), want %q once after app", i, hs, got, n, want)
		}
		sc := trace.SpanContextFromContext(e.k.Extract(context.Background(), hs))
		if !sc.IsRemote() || sc.SpanID() != sends[i].SpanContext().SpanID() || sc.TraceID() != parent.SpanContext().TraceID() {
			t.Errorf("record %d: extracted %v, want remote span %v of trace %v", i, sc, sends[i].SpanContext().SpanID(), parent.SpanContext().TraceID())
		}
	}
}

// TestTracer_NoInjectByDefault: without WithInjectTraceContext the
// records are sent with only their own headers.
func TestTracer_NoInjectByDefault(t *testing.T) {
	e := newEnv(t, kotel.WithMetrics(false))
	ctx, parent := e.tp.Tracer("test").Start(e.ctx, "parent")
	defer parent.End()
	if _, err := e.p.Send(ctx, &kpush.Record{Topic: "t", Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	recs, err := e.c.ReadAll(e.ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || len(recs[0].Headers) != 0 {
		t.Errorf("records %v, want one without headers", recs)
	}
	if n := len(e.spans.Ended()); n != 1 {
		t.Errorf("%d spans ended, want the record's", n)
	}
}

// TestTracer_SameRecordConcurrently: a *Record sent again before its
// first outcome gets a span per send, and both end (kpush hands the hooks
// a copy per send, which the pairing relies on).
func TestTracer_SameRecordConcurrently(t *testing.T) {
	e := newEnv(t, kotel.WithMetrics(false))
	r := &kpush.Record{Topic: "t", Value: []byte("twice")}
	done := make(chan error, 2)
	for range 2 {
		e.p.SendAsync(e.ctx, r, func(_ kpush.Result, err error) { done <- err })
	}
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-e.ctx.Done():
			t.Fatal("no outcome")
		}
	}
	if n := len(e.spans.Ended()); n != 2 {
		t.Errorf("%d spans ended, want 2", n)
	}
	if n := len(e.spans.Started()) - len(e.spans.Ended()); n != 0 {
		t.Errorf("%d spans never ended", n)
	}
}

// TestTracer_DefaultTopicSpanName: a record without a topic goes to the
// producer's default topic, and its span is renamed after it.
func TestTracer_DefaultTopicSpanName(t *testing.T) {
	e := newEnv(t, kotel.WithMetrics(false))
	p, err := kpush.New(kpush.WithBrokers(e.c.Addrs()...), kpush.WithDefaultTopic("t"), kpush.WithHooks(e.k.Hooks()...))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	if _, err := p.Send(e.ctx, &kpush.Record{Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	ended := e.spans.Ended()
	if len(ended) != 1 || ended[0].Name() != "send t" || attrs(ended[0])[semconv.MessagingDestinationNameKey].AsString() != "t" {
		t.Errorf("spans %v, want one \"send t\" with destination t", ended)
	}
}

// TestTracer_ReusedRecordsPairSpans: kpush reuses the *Record the hooks
// see once its outcome is delivered; under concurrent Send and SendAsync
// the tracer still ends each span with its own record's outcome: the
// span that ended with offset o is the one whose context was injected
// into the record at offset o, and every span started is ended.
func TestTracer_ReusedRecordsPairSpans(t *testing.T) {
	e := newEnv(t, kotel.WithMetrics(false), kotel.WithInjectTraceContext(true))
	const goroutines, perG = 32, 60
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			var cbs sync.WaitGroup
			for i := range perG {
				r := &kpush.Record{Topic: "t", Value: []byte(fmt.Sprintf("%d-%d", g, i))}
				if i%2 == 0 {
					if _, err := e.p.Send(e.ctx, r); err != nil {
						t.Error(err)
					}
					continue
				}
				cbs.Add(1)
				e.p.SendAsync(e.ctx, r, func(_ kpush.Result, err error) {
					defer cbs.Done()
					if err != nil {
						t.Error(err)
					}
				})
			}
			cbs.Wait()
		})
	}
	wg.Wait()
	const total = goroutines * perG
	ended := e.spans.Ended()
	if len(ended) != total || len(e.spans.Started()) != total {
		t.Fatalf("%d spans started, %d ended; want %d each", len(e.spans.Started()), len(ended), total)
	}
	byOffset := map[int64]string{} // the ended span's traceparent by the offset it ended with
	for _, s := range ended {
		o, ok := attrs(s)[semconv.MessagingKafkaOffsetKey]
		if !ok {
			t.Fatalf("span %v ended without an offset", s.SpanContext().SpanID())
		}
		byOffset[o.AsInt64()] = traceparent(s.SpanContext())
	}
	recs, err := e.c.ReadAll(e.ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != total {
		t.Fatalf("read %d records, want %d", len(recs), total)
	}
	for _, r := range recs {
		var got string
		for _, h := range r.Headers {
			if h.Key == "traceparent" {
				got = string(h.Value)
			}
		}
		if want := byOffset[r.Offset]; got != want {
			t.Errorf("record %q at offset %d carries %q; the span that ended with that offset is %q", r.Value, r.Offset, got, want)
		}
	}
}
