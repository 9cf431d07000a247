package wire_test

import (
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kpush/kpush/internal/wire"
)

// The same re-entrant token provider as
// TestReauth_UserCodeRunsOutsideWriteLock, but the session has already
// ended when the renewal starts (an idle connection renews lazily on its
// next request). The provider's own Do cannot go out on an ended session
// and waits for the renewal, which only the provider's return ends: it
// gives up after the request timeout as not written, and the renewal and
// the first request complete on the same connection.
func TestReauth_UserCodeRunsOutsideWriteLock_SessionEnded(t *testing.T) {
	_, addr := saslCluster(t, kfake.BrokerConfigs(map[string]string{"connections.max.reauth.ms": "3600000"}))
	var c *wire.Conn
	roundTrip := func() error { return metadataRoundTrip(c) }
	provider := make(chan error, 1)
	mech := &reentrantMech{Mechanism: mechanisms("alice", secret)["SCRAM-SHA-256"], use: func() error {
		provider <- roundTrip()
		return nil // the provider gets its token anyway
	}}
	c = dial(t, addr, &wire.Config{SASL: mech, RequestTimeout: 2 * time.Second})
	wire.EndSession(c)
	done := make(chan error, 1)
	go func() { done <- roundTrip() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("request after the session's end: %v, want it answered after the renewal", err)
		}
		if err := <-provider; !errors.Is(err, wire.ErrConnClosed) {
			t.Fatalf("provider's own request during the renewal: %v, want not written (ErrConnClosed)", err)
		}
	case <-time.After(3 * waitTimeout):
		t.Fatal("Do past the session's end never returned: the token provider's Do waits on c.renewing, which only the provider's return closes")
	}
}
