package kotel_test

import (
	"context"
	"errors"
	"testing"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kotel"
)

// TestNew_InvalidOptions: nil providers and propagators are typed errors
// naming the option.
func TestNew_InvalidOptions(t *testing.T) {
	for _, c := range []struct {
		name string
		opt  kotel.Option
	}{
		{"WithMeterProvider", kotel.WithMeterProvider(nil)},
		{"WithTracerProvider", kotel.WithTracerProvider(nil)},
		{"WithPropagator", kotel.WithPropagator(nil)},
	} {
		t.Run(c.name, func(t *testing.T) {
			k, err := kotel.New(c.opt)
			var oe *kotel.OptionError
			if k != nil || !errors.Is(err, kotel.ErrInvalidOption) || !errors.As(err, &oe) || oe.Option != c.name {
				t.Errorf("New = %v, %v; want an *OptionError for %s", k, err, c.name)
			}
		})
	}
}

// TestObserveProducer_Errors: ObserveProducer refuses a nil producer and
// a Kotel without metrics.
func TestObserveProducer_Errors(t *testing.T) {
	k, err := kotel.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.ObserveProducer(nil); !errors.Is(err, kotel.ErrNilProducer) {
		t.Errorf("nil producer: %v, want ErrNilProducer", err)
	}
	off, err := kotel.New(kotel.WithMetrics(false))
	if err != nil {
		t.Fatal(err)
	}
	p, err := kpush.New(kpush.WithBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	if _, err := off.ObserveProducer(p); !errors.Is(err, kotel.ErrMetricsOff) {
		t.Errorf("metrics off: %v, want ErrMetricsOff", err)
	}
}

// TestHooks_ByOption: Hooks returns the meter and the tracer only when on.
func TestHooks_ByOption(t *testing.T) {
	for _, c := range []struct {
		opts []kotel.Option
		n    int
	}{
		{nil, 2},
		{[]kotel.Option{kotel.WithMetrics(false)}, 1},
		{[]kotel.Option{kotel.WithTracing(false)}, 1},
		{[]kotel.Option{kotel.WithMetrics(false), kotel.WithTracing(false)}, 0},
	} {
		k, err := kotel.New(c.opts...)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(k.Hooks()); n != c.n {
			t.Errorf("%d options: %d hooks, want %d", len(c.opts), n, c.n)
		}
	}
}

// TestHeaderCarrier: Set replaces an existing key's value rather than
// adding a second header, appends new keys, and never writes to the
// caller's backing array.
func TestHeaderCarrier(t *testing.T) {
	orig := make([]kpush.Header, 2, 8)
	orig[0] = kpush.Header{Key: "a", Value: []byte("1")}
	orig[1] = kpush.Header{Key: "traceparent", Value: []byte("old")}
	h := orig
	c := kotel.NewHeaderCarrier(&h)
	c.Set("traceparent", "new")
	c.Set("tracestate", "s")
	if got := c.Get("traceparent"); got != "new" {
		t.Errorf("Get(traceparent) = %q", got)
	}
	if keys := c.Keys(); len(keys) != 3 || keys[0] != "a" || keys[1] != "traceparent" || keys[2] != "tracestate" {
		t.Errorf("Keys = %v", keys)
	}
	if string(orig[1].Value) != "old" || orig[:3][2].Key != "" {
		t.Errorf("caller's array changed: %v", orig[:3])
	}
	if c.Get("missing") != "" {
		t.Error("Get of a missing key is not empty")
	}
}
