package kpush_test

import (
	"testing"
	"time"

	"github.com/kpush/kpush/kafkatest"
)

// kpushGoroutines selects goroutines running kpush code, or started by it:
// the engine's (metadata, reaper, sinks, connection readers, callbacks) and
// any test goroutine still blocked inside a kpush call. The fake cluster's
// goroutines are kafkatest's business (Cluster.Close checks them).
var kpushGoroutines = kafkatest.GoroutineFilter{
	Packages: []string{"github.com/kpush/kpush"},
	Except:   []string{"github.com/kpush/kpush/kafkatest"},
}

// leakTimeout bounds the wait for kpush goroutines to exit after Close.
const leakTimeout = 10 * time.Second

// checkNoKpushGoroutines fails the test, listing their stacks, if
// goroutines running kpush code survive leakTimeout: Close (or a failed
// New) must leave none, whatever else the process is running.
func checkNoKpushGoroutines(t testing.TB, what string) {
	t.Helper()
	if err := kpushGoroutines.Wait(leakTimeout); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}
