package wire_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sasl"

	"github.com/kpush/kpush/internal/wire"
)

// reentrantMech is a mechanism whose Authenticate, from its second call on
// (a re-authentication), first runs use — user code that needs the
// connection, like a token provider calling back into the producer.
type reentrantMech struct {
	sasl.Mechanism
	calls atomic.Int32
	use   func() error
}

func (m *reentrantMech) Authenticate(ctx context.Context, addr string) (sasl.Session, []byte, error) {
	if m.calls.Add(1) > 1 {
		if err := m.use(); err != nil {
			return nil, nil, err
		}
	}
	return m.Mechanism.Authenticate(ctx, addr)
}

// User code that runs for a re-authentication — the mechanism's
// Authenticate (a token provider) and the AuthHook — must run outside the
// connection's write lock: each one here sends a request on the same
// connection and waits for its answer, which deadlocked while the
// re-authentication held wmu.
func TestReauth_UserCodeRunsOutsideWriteLock(t *testing.T) {
	_, addr := saslCluster(t, kfake.BrokerConfigs(map[string]string{"connections.max.reauth.ms": "3600000"}))
	var conn atomic.Pointer[wire.Conn]
	roundTrip := func() error { return metadataRoundTrip(conn.Load()) }
	mech := &reentrantMech{Mechanism: mechanisms("alice", secret)["SCRAM-SHA-256"], use: roundTrip}
	hookErr := make(chan error, 1)
	cfg := &wire.Config{SASL: mech, AuthHook: func(_ string, reauth bool, err error) {
		if reauth {
			if err == nil {
				err = roundTrip()
			}
			hookErr <- err
		}
	}}
	c := dial(t, addr, cfg)
	conn.Store(c)
	wire.ExpireSession(c)
	done := make(chan error, 1)
	go func() { done <- roundTrip() }() // renews the session first
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("request after the renewal point: %v", err)
		}
	case <-time.After(2 * waitTimeout):
		t.Fatal("Do past the renewal point never returned: user code (the token provider or the AuthHook) ran under the write lock and its request on the same connection deadlocked")
	}
	select {
	case err := <-hookErr:
		if err != nil {
			t.Fatalf("AuthHook's request on the same connection: %v", err)
		}
	case <-time.After(2 * waitTimeout):
		t.Fatal("AuthHook deadlocked: it ran under the write lock")
	}
	if n := mech.calls.Load(); n != 2 {
		t.Errorf("Authenticate ran %d times, want 2 (Dial, renewal)", n)
	}
}

// metadataRoundTrip sends a Metadata request on c and waits for its answer.
func metadataRoundTrip(c *wire.Conn) error {
	r := newResult()
	if err := c.Do(metadataReq("t"), false, r.done); err != nil {
		return err
	}
	select {
	case <-r.ch:
		return r.err
	case <-time.After(waitTimeout):
		return errors.New("no answer")
	}
}

// TestConn_RenewDue: RenewDue (read without the write lock by a Send that
// would write its own request, sink.kick) tells when the next request
// renews the session first, and stops once it has been renewed.
func TestConn_RenewDue(t *testing.T) {
	_, addr := saslCluster(t, kfake.BrokerConfigs(map[string]string{"connections.max.reauth.ms": "3600000"}))
	c := dial(t, addr, &wire.Config{SASL: mechanisms("alice", secret)["SCRAM-SHA-256"]})
	if c.RenewDue() {
		t.Fatal("renewal due right after Dial")
	}
	wire.ExpireSession(c)
	if !c.RenewDue() {
		t.Fatal("no renewal due past the renewal point")
	}
	if err := metadataRoundTrip(c); err != nil {
		t.Fatal(err)
	}
	if c.RenewDue() {
		t.Fatal("renewal still due after the session was renewed")
	}
}
