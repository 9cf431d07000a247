package kotel

// Goroutines and ownership: New builds a Kotel that is never changed
// afterwards and starts no goroutine; see meter.go and tracer.go for what
// runs on which kpush goroutine.

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"

	"github.com/kpush/kpush"
)

// Errors of ObserveProducer.
var (
	// ErrMetricsOff: the Kotel was built with WithMetrics(false).
	ErrMetricsOff = errors.New("kotel: metrics are off")
	// ErrNilProducer: ObserveProducer was given a nil producer.
	ErrNilProducer = errors.New("kotel: nil producer")
)

// scopeName is the instrumentation scope of the meter and the tracer.
const scopeName = "github.com/kpush/kpush/kotel"

// Kotel is OpenTelemetry instrumentation for a kpush producer: metrics,
// per-record spans, trace-context propagation. Install it with
// kpush.WithHooks(k.Hooks()...). One Kotel may serve several producers.
// Safe for concurrent use.
type Kotel struct {
	prop   propagation.TextMapPropagator
	meter  *meter  // nil with WithMetrics(false)
	tracer *tracer // nil with WithTracing(false)
}

// New returns instrumentation configured by opts. It fails with an
// *OptionError for an invalid option, or with the meter provider's error
// if an instrument cannot be created.
func New(opts ...Option) (*Kotel, error) {
	c := defaultConfig()
	for _, o := range opts {
		o.apply(&c)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	k := &Kotel{prop: c.prop}
	if c.metrics {
		m, err := newMeter(c.mp, c.attrs)
		if err != nil {
			return nil, err
		}
		k.meter = m
	}
	if c.tracing {
		k.tracer = newTracer(c.tp, c.prop, c.inject, c.attrs)
	}
	return k, nil
}

// Hooks returns the hooks to pass to kpush.WithHooks: the meter's and
// the tracer's (each only when on).
func (k *Kotel) Hooks() []kpush.Hook {
	var hs []kpush.Hook
	if k.meter != nil {
		hs = append(hs, k.meter)
	}
	if k.tracer != nil {
		hs = append(hs, k.tracer)
	}
	return hs
}

// Extract is the package's Extract with k's propagator (WithPropagator).
func (k *Kotel) Extract(ctx context.Context, headers []kpush.Header) context.Context {
	return Extract(ctx, k.prop, headers)
}

// ObserveProducer adds p's buffered bytes and messages and in-flight
// requests (from p.Stats, read at each collection) to the metrics, as
// kpush.producer.buffered.bytes, kpush.producer.buffered.messages and
// kpush.producer.inflight.requests, with attrs (for example
// semconv.MessagingClientID, to tell several producers apart) after those
// of WithAttributes.
// Unregister the returned registration when p is closed. It fails with
// ErrMetricsOff under WithMetrics(false), ErrNilProducer for a nil p, or
// the meter provider's error.
func (k *Kotel) ObserveProducer(p *kpush.Producer, attrs ...attribute.KeyValue) (metric.Registration, error) {
	if k.meter == nil {
		return nil, ErrMetricsOff
	}
	if p == nil {
		return nil, ErrNilProducer
	}
	return k.meter.observe(p, attrs)
}
