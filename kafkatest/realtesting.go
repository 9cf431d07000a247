package kafkatest

import (
	"context"
	"os"
	"sync"
	"testing"
)

// EnableCommand is the command that runs the real-broker tests, named by
// the line each of them skips with when they are not enabled.
const EnableCommand = "bash .ci/realkafka (or KPUSH_REAL_KAFKA=1 go test ./realtest/)"

// RealEnabled reports whether the real-broker tests should run: with
// KPUSH_REAL_KAFKA=1 or KPUSH_KAFKA_SEEDS set.
func RealEnabled() bool {
	return os.Getenv(EnvRealKafka) == "1" || len(Seeds()) > 0
}

// SkipUnlessReal skips tb with one line naming EnableCommand unless
// RealEnabled.
func SkipUnlessReal(tb testing.TB) {
	tb.Helper()
	if !RealEnabled() {
		tb.Skip("real Kafka broker test; enable with: " + EnableCommand)
	}
}

// NewTestRealCluster starts a real cluster for a test and registers Close
// with tb.Cleanup. It skips (one line) unless RealEnabled; once enabled,
// any failure to provision or start calls tb.Fatal, with the tail of the
// broker log, so a CI tier can never pass by skipping.
func NewTestRealCluster(tb testing.TB, opts ...RealOption) *RealCluster {
	tb.Helper()
	SkipUnlessReal(tb)
	ctx := context.Background()
	if t, ok := tb.(interface{ Context() context.Context }); ok {
		ctx = t.Context()
	}
	c, err := NewRealCluster(ctx, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Error(err)
		}
	})
	return c
}

var (
	sharedMu       sync.Mutex
	sharedClusters = map[string]*RealCluster{}
)

// SharedRealCluster returns a 1-node real cluster shared by every test of
// the binary that asks for the same version (KafkaVersion() unless opts set
// one), so a package pays for one JVM start. It skips like
// NewTestRealCluster. Tests must use their own topics. Call CloseShared
// from TestMain after m.Run; Pdeathsig kills the JVM if the binary dies
// first.
func SharedRealCluster(tb testing.TB, opts ...RealOption) *RealCluster {
	tb.Helper()
	SkipUnlessReal(tb)
	cfg := defaultRealConfig()
	for _, o := range opts {
		o.applyReal(&cfg)
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if c := sharedClusters[cfg.version]; c != nil {
		return c
	}
	c, err := NewRealCluster(context.Background(), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	sharedClusters[cfg.version] = c
	return c
}

// CloseShared closes every cluster SharedRealCluster started.
func CloseShared() error {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	var first error
	for v, c := range sharedClusters {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
		delete(sharedClusters, v)
	}
	return first
}
