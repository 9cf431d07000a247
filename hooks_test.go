package kpush_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kpush/kpush"
)

// TestWithHooks_RejectsNonHook: a value implementing no Hook interface is
// a configuration error naming the option.
func TestWithHooks_RejectsNonHook(t *testing.T) {
	for _, h := range []kpush.Hook{nil, 42, struct{}{}} {
		_, err := kpush.New(kpush.WithBrokers("127.0.0.1:9092"), kpush.WithHooks(h))
		var ce *kpush.ConfigError
		if !errors.As(err, &ce) || ce.Option != "WithHooks" || !errors.Is(err, kpush.ErrInvalidConfig) {
			t.Errorf("New(WithHooks(%T)) = %v, want a *ConfigError for WithHooks", h, err)
		}
	}
}

// TestCauseOf_Bounded: causes map to short fixed names, kpush's own first.
func TestCauseOf_Bounded(t *testing.T) {
	pe := func(unknown bool, err error) error {
		return &kpush.ProduceError{Topic: "t", Partition: 0, Unknown: unknown, Err: err}
	}
	for _, c := range []struct {
		err     error
		cause   string
		outcome kpush.Outcome
	}{
		{nil, "", kpush.OutcomeAcked},
		{pe(false, kpush.ErrBufferFull), "buffer_full", kpush.OutcomeNotWritten},
		{pe(true, fmt.Errorf("%w: %w", kpush.ErrDeliveryTimeout, kerr.RequestTimedOut)), "delivery_timeout", kpush.OutcomeUnknown},
		{pe(false, kerr.NotEnoughReplicas), "not_enough_replicas", kpush.OutcomeNotWritten},
		{pe(true, context.Canceled), "canceled", kpush.OutcomeUnknown},
		{pe(false, errors.New("something")), "other", kpush.OutcomeNotWritten},
	} {
		if got := kpush.CauseOf(c.err); got != c.cause {
			t.Errorf("CauseOf(%v) = %q, want %q", c.err, got, c.cause)
		}
		if got := kpush.OutcomeOf(c.err); got != c.outcome {
			t.Errorf("OutcomeOf(%v) = %v, want %v", c.err, got, c.outcome)
		}
	}
}
