package realfaults

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kpush/kpush"
)

// sendAll sends n records to a new topic through a producer built with
// opts and checks each is acknowledged and in the log where reported.
func sendAll(t *testing.T, e *edgeCluster, topic string, n int, opts ...kpush.Option) *kpush.Producer {
	t.Helper()
	if err := e.createTopic(t.Context(), topic, 2, nil); err != nil {
		t.Fatal(err)
	}
	p, err := kpush.New(append([]kpush.Option{kpush.WithDeliveryTimeout(30 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	want := map[string][2]int64{}
	for i := range n {
		v := fmt.Sprint(i)
		res, err := p.Send(t.Context(), &kpush.Record{Topic: topic, Value: []byte(v)})
		if err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
		want[v] = [2]int64{int64(res.Partition), res.Offset}
	}
	checkLog(t, e, topic, want)
	return p
}

// checkLog checks the topic holds exactly the records in want (value →
// partition, offset).
func checkLog(t *testing.T, e *edgeCluster, topic string, want map[string][2]int64) {
	t.Helper()
	got, err := e.readAll(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("log holds %d records, want %d", len(got), len(want))
	}
	for _, g := range got {
		if w, ok := want[string(g.Value)]; !ok || w != [2]int64{int64(g.Partition), g.Offset} {
			t.Errorf("record %q at %d/%d, reported at %v (known %v)", g.Value, g.Partition, g.Offset, w, ok)
		}
	}
}

// TestRealSecurity_TLS produces over the broker's SSL listener, which
// reads tlsgen's PEM files (ssl.keystore.type=PEM).
func TestRealSecurity_TLS(t *testing.T) {
	e := sharedEdgeCluster(t)
	sendAll(t, e, "sec-tls", 200, kpush.WithBrokers(e.sslAddr), kpush.WithTLS(e.tls.ClientConfig(false)))
}

// TestRealSecurity_TLSUnknownCA: a client that does not trust the broker's
// CA fails with ErrAuthentication, within seconds, and writes nothing.
func TestRealSecurity_TLSUnknownCA(t *testing.T) {
	e := sharedEdgeCluster(t)
	authFails(t, e, "sec-tls-bad", kpush.WithBrokers(e.sslAddr), kpush.WithTLS(&tls.Config{MinVersion: tls.VersionTLS12}))
}

// TestRealSecurity_SASL produces over SASL_PLAINTEXT with each mechanism.
func TestRealSecurity_SASL(t *testing.T) {
	e := sharedEdgeCluster(t)
	for _, tc := range []struct {
		name string
		m    kpush.SASLMechanism
	}{
		{"PLAIN", kpush.SASLPlain(plainUser, plainPass)},
		{"SCRAM-SHA-256", kpush.SASLScramSHA256(scram256User, scram256Pass)},
		{"SCRAM-SHA-512", kpush.SASLScramSHA512(scram512User, scram512Pass)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sendAll(t, e, "sec-sasl-"+tc.name, 200, kpush.WithBrokers(e.saslAddr), kpush.WithSASL(tc.m))
		})
	}
}

// TestRealSecurity_BadCredentials: a wrong password or an unknown user is
// refused by the broker (SASL_AUTHENTICATION_FAILED); Send fails with
// ErrAuthentication and ErrNotWritten within seconds and nothing is
// written.
func TestRealSecurity_BadCredentials(t *testing.T) {
	e := sharedEdgeCluster(t)
	for _, tc := range []struct {
		name string
		m    kpush.SASLMechanism
	}{
		{"PLAIN-wrong-password", kpush.SASLPlain(plainUser, "nope")},
		{"PLAIN-unknown-user", kpush.SASLPlain("mallory", "nope")},
		{"SCRAM-SHA-256-wrong-password", kpush.SASLScramSHA256(scram256User, "nope")},
		{"SCRAM-SHA-512-unknown-user", kpush.SASLScramSHA512("mallory", "nope")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			authFails(t, e, "sec-bad-"+tc.name, kpush.WithBrokers(e.saslAddr), kpush.WithSASL(tc.m))
		})
	}
}

// authFails checks that a producer built with opts cannot send: Send ends
// within 15 s with an error matching ErrAuthentication and ErrNotWritten,
// Stats counts the failure, and the topic stays empty.
func authFails(t *testing.T, e *edgeCluster, topic string, opts ...kpush.Option) {
	t.Helper()
	if err := e.createTopic(t.Context(), topic, 1, nil); err != nil {
		t.Fatal(err)
	}
	p, err := kpush.New(append([]kpush.Option{kpush.WithDeliveryTimeout(60 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	start := time.Now()
	_, err = p.Send(ctx, &kpush.Record{Topic: topic, Value: []byte("x")})
	took := time.Since(start)
	if !errors.Is(err, kpush.ErrAuthentication) || !errors.Is(err, kpush.ErrNotWritten) {
		t.Fatalf("Send = %v after %v, want ErrAuthentication and ErrNotWritten", err, took)
	}
	st := p.Stats()
	if st.AuthFailures == 0 || st.LastAuthError == "" {
		t.Errorf("Stats: %d auth failures, last %q", st.AuthFailures, st.LastAuthError)
	}
	checkLog(t, e, topic, nil)
	t.Logf("refused after %v: %v (broker said %q)", took.Round(time.Millisecond), err, st.LastAuthError)
}

// TestRealSecurity_Reauthentication sends for longer than the broker's
// SASL session lifetime (connections.max.reauth.ms=3000): kpush must
// re-authenticate (KIP-368) before the broker would close the connection,
// and no record may fail.
func TestRealSecurity_Reauthentication(t *testing.T) {
	e := sharedEdgeCluster(t)
	topic := "sec-reauth"
	if err := e.createTopic(t.Context(), topic, 2, nil); err != nil {
		t.Fatal(err)
	}
	p, err := kpush.New(kpush.WithBrokers(e.saslAddr), kpush.WithSASL(kpush.SASLScramSHA512(scram512User, scram512Pass)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	want := map[string][2]int64{}
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; p.Stats().Reauthentications < 2; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no second re-authentication after %d records in 30 s (sessions last %v); stats %+v", i, edgeReauth, p.Stats())
		}
		v := fmt.Sprint(i)
		res, err := p.Send(t.Context(), &kpush.Record{Topic: topic, Value: []byte(v)})
		if err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
		want[v] = [2]int64{int64(res.Partition), res.Offset}
	}
	checkLog(t, e, topic, want)
	t.Logf("%d records, %d re-authentications, %d auth failures", len(want), p.Stats().Reauthentications, p.Stats().AuthFailures)
}
