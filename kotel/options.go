package kotel

import (
	"errors"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ErrInvalidOption matches every error New returns for an invalid option.
var ErrInvalidOption = errors.New("kotel: invalid option")

// OptionError reports an invalid option passed to New.
// errors.Is(err, ErrInvalidOption) matches it.
type OptionError struct {
	Option string // the option's name, e.g. "WithMeterProvider"
	Reason string
}

// Error implements error.
func (e *OptionError) Error() string { return "kotel: invalid option " + e.Option + ": " + e.Reason }

// Is makes errors.Is(err, ErrInvalidOption) true.
func (e *OptionError) Is(target error) bool { return target == ErrInvalidOption }

// Option configures New. Only this package defines options.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// config is resolved once by New and never changed afterwards.
type config struct {
	mp      metric.MeterProvider
	tp      trace.TracerProvider
	prop    propagation.TextMapPropagator
	inject  bool
	metrics bool
	tracing bool
	attrs   []attribute.KeyValue
	bad     []*OptionError // nil arguments, reported by validate
}

// defaultConfig holds every default.
func defaultConfig() config {
	return config{
		mp:      otel.GetMeterProvider(),
		tp:      otel.GetTracerProvider(),
		prop:    otel.GetTextMapPropagator(),
		metrics: true,
		tracing: true,
	}
}

func (c *config) validate() error {
	if len(c.bad) > 0 {
		return c.bad[0]
	}
	return nil
}

// WithMeterProvider sets where the metrics are recorded. Default: the
// global provider (otel.GetMeterProvider), which records nothing until the
// application installs one with otel.SetMeterProvider. nil is an error.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return nonNil("WithMeterProvider", "nil provider", mp, func(c *config) { c.mp = mp })
}

// WithTracerProvider sets where the spans go. Default: the global provider
// (otel.GetTracerProvider), which records nothing until the application
// installs one with otel.SetTracerProvider. nil is an error.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return nonNil("WithTracerProvider", "nil provider", tp, func(c *config) { c.tp = tp })
}

// WithPropagator sets the propagator that writes the trace context into
// record headers (with WithInjectTraceContext) and that Extract reads it
// with. Default: the global propagator (otel.GetTextMapPropagator), which
// writes nothing until the application installs one with
// otel.SetTextMapPropagator; propagation.TraceContext{} writes the W3C
// "traceparent" and "tracestate" headers. nil is an error.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return nonNil("WithPropagator", "nil propagator", p, func(c *config) { c.prop = p })
}

// nonNil is an option that applies set, or records an *OptionError for
// option when v (an interface value) is nil.
func nonNil(option, reason string, v any, set func(*config)) Option {
	return optionFunc(func(c *config) {
		if v == nil {
			c.bad = append(c.bad, &OptionError{Option: option, Reason: reason})
			return
		}
		set(c)
	})
}

// WithInjectTraceContext makes the tracer write each record's span context
// into its headers through the propagator (WithPropagator), so a consumer
// can continue the trace (see Extract). Default false: records are sent
// with the headers they have. When on, the headers of the record the
// hooks see (kpush's copy) are replaced by a new slice, so the caller's
// Record and header array are never written to; an existing header with a
// propagator's key has its value replaced rather than duplicated. It has
// no effect when tracing is off (WithTracing(false)).
func WithInjectTraceContext(on bool) Option {
	return optionFunc(func(c *config) { c.inject = on })
}

// WithAttributes adds attributes to every measurement and span, for
// example semconv.MessagingClientID("orders-api") to tell producers
// apart. Keep them constant: they become part of every series. Calling it
// again adds to them. Default: none.
func WithAttributes(attrs ...attribute.KeyValue) Option {
	return optionFunc(func(c *config) { c.attrs = append(c.attrs, attrs...) })
}

// WithMetrics turns the metric instruments on or off. Default true.
func WithMetrics(on bool) Option { return optionFunc(func(c *config) { c.metrics = on }) }

// WithTracing turns the per-record spans on or off. Default true.
func WithTracing(on bool) Option { return optionFunc(func(c *config) { c.tracing = on }) }
