package kotel

// Goroutines and ownership: the tracer starts no goroutine. OnRecordSend
// runs on the caller's goroutine, OnRecordDone on the goroutine that
// delivers the record's outcome (see kpush.HookRecordDone); they meet in
// spans, a set of shards each guarded by its own mutex, held only for one
// map operation and never while calling OpenTelemetry or kpush.

import (
	"context"
	"strconv"
	"sync"
	"unsafe"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/kpush/kpush"
)

// spanShards is the number of shards of the record → span table; a power
// of two, enough that thousands of concurrent senders rarely share one.
const spanShards = 64

// tracer starts one PRODUCER span per record in OnRecordSend and ends it
// in OnRecordDone; it implements kpush's HookRecordSend and
// HookRecordDone.
type tracer struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	inject bool
	attrs  []attribute.KeyValue // WithAttributes, on every span
	shards [spanShards]spanShard
}

var (
	_ kpush.HookRecordSend = (*tracer)(nil)
	_ kpush.HookRecordDone = (*tracer)(nil)
)

// spanShard maps a record in flight to its span(s).
type spanShard struct {
	mu sync.Mutex
	// m holds the span of each send in progress, by the record pointer
	// the hooks see: kpush's own copy, which kpush reuses for a later send
	// only after this send's OnRecordDone returned (kpush.HookRecordSend),
	// so OnRecordDone deletes the entry before the pointer can come back.
	m map[*kpush.Record]trace.Span // guarded by mu
	_ [48]byte                     // keeps shards on separate cache lines
}

func newTracer(tp trace.TracerProvider, prop propagation.TextMapPropagator, inject bool, attrs []attribute.KeyValue) *tracer {
	t := &tracer{
		tracer: tp.Tracer(scopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		prop:   prop,
		inject: inject,
		attrs:  attrs,
	}
	for i := range t.shards {
		t.shards[i].m = make(map[*kpush.Record]trace.Span)
	}
	return t
}

func (t *tracer) shard(r *kpush.Record) *spanShard {
	// Fibonacci hashing of the address; heap objects do not move.
	h := uint64(uintptr(unsafe.Pointer(r))) * 0x9E3779B97F4A7C15
	return &t.shards[h>>(64-6)]
}

// OnRecordSend starts the record's span as a child of the span in ctx
// and, when asked, writes its context into the record's headers.
func (t *tracer) OnRecordSend(ctx context.Context, r *kpush.Record) {
	name := "send"
	attrs := make([]attribute.KeyValue, 0, 6+len(t.attrs))
	attrs = append(attrs, t.attrs...)
	attrs = append(attrs, attrSystem, attrOpName, attrOpType,
		semconv.MessagingMessageBodySize(len(r.Value)))
	if r.Topic != "" {
		name = "send " + r.Topic
		attrs = append(attrs, semconv.MessagingDestinationName(r.Topic))
	}
	if r.Key != nil && r.Value == nil {
		attrs = append(attrs, semconv.MessagingKafkaMessageTombstone(true))
	}
	ctx, span := t.tracer.Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attrs...))
	if t.inject {
		t.prop.Inject(ctx, NewHeaderCarrier(&r.Headers))
	}
	s := t.shard(r)
	s.mu.Lock()
	prev := s.m[r]
	s.m[r] = span
	s.mu.Unlock()
	if prev != nil {
		// Never: kpush reuses a record only after its OnRecordDone, which
		// removed it. Ending the older span keeps it from leaking if that
		// ever changed.
		prev.End()
	}
}

// OnRecordDone ends the record's span with its partition, offset and, on
// failure, an error status naming the outcome category.
func (t *tracer) OnRecordDone(ev kpush.RecordDoneEvent) {
	s := t.shard(ev.Record)
	s.mu.Lock()
	span := s.m[ev.Record]
	delete(s.m, ev.Record)
	s.mu.Unlock()
	if span == nil || !span.IsRecording() {
		if span != nil {
			span.End()
		}
		return
	}
	if ev.Record.Topic == "" && ev.Topic != "" { // the default topic
		span.SetName("send " + ev.Topic)
		span.SetAttributes(semconv.MessagingDestinationName(ev.Topic))
	}
	if ev.Partition >= 0 {
		span.SetAttributes(semconv.MessagingDestinationPartitionID(strconv.Itoa(int(ev.Partition))))
	}
	o := kpush.OutcomeOf(ev.Err)
	span.SetAttributes(AttrOutcome.String(o.String()))
	if ev.Err == nil {
		if ev.Result.Offset >= 0 {
			span.SetAttributes(semconv.MessagingKafkaOffset(int(ev.Result.Offset)))
		}
	} else {
		span.SetAttributes(semconv.ErrorTypeKey.String(errorType(ev.Err)))
		span.RecordError(ev.Err)
		span.SetStatus(codes.Error, o.String())
	}
	span.End()
}
