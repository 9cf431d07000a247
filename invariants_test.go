package kpush_test

// Invariants the reliability scenarios and the soak check on every run,
// besides the model check (reliability_model_test.go), and the bounds they
// use. docs/reliability.md reports each as a column.

import (
	"time"
)

// deadlineSlack is how late after its delivery deadline (the Send ctx's
// deadline or the delivery timeout, whichever is sooner) a record's outcome
// may arrive: 100ms, the documented slack (WithDeliveryTimeout; docs/design.md, "Outcomes").
// The race detector slows the engine about tenfold, so under it the bound
// is 500ms.
func deadlineSlack() time.Duration {
	if raceEnabled {
		return 500 * time.Millisecond
	}
	return 100 * time.Millisecond
}
