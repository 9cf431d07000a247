package kpush_test

import (
	"crypto/tls"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/internal/tlsgen"
	"github.com/kpush/kpush/kafkatest"
)

// TestSASL_ConnectionDropDuringAuthIsRetried: a broker (or the network)
// that drops the connection once in the middle of the SASL exchange —
// a broker restart, a load balancer reset — says nothing about the
// credentials. The records must be delivered, not failed with
// ErrAuthentication.
func TestSASL_ConnectionDropDuringAuthIsRetried(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("drop", 2),
		kafkatest.WithSASL(kafkatest.SASLScramSHA256, testUser, testSecret))
	fake := c.Fake()
	var n atomic.Int32
	fake.ControlKey(int16(kmsg.SASLAuthenticate), func(kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		if n.Add(1) == 3 { // the produce connection's first SaslAuthenticate (metadata took 1 and 2)
			return nil, errors.New("simulated connection reset"), true // kfake closes the connection
		}
		return nil, nil, false
	})
	p := newProducer(t, c, kpush.WithSASL(kpush.SASLScramSHA256(testUser, testSecret)))
	sendAndReadBack(t, c, p, "drop", 20)
	if s := p.Stats(); s.AuthFailures != 0 {
		t.Errorf("AuthFailures = %d (%s); a dropped connection is not an authentication failure", s.AuthFailures, s.LastAuthError)
	}
}

// TestSend_AuthFailureAfterUnknownOutcome: a batch whose connection died
// after it was written (outcome unknown) waits to be sent again; when the
// new connection's authentication is refused, its records fail with
// ErrAuthentication and ErrOutcomeUnknown, never ErrNotWritten (it may be
// in the log), and records sent once the broker accepts the credentials
// again are delivered, in spite of the dropped sequence numbers.
func TestSend_AuthFailureAfterUnknownOutcome(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("uk", 1),
		kafkatest.WithSASL(kafkatest.SASLPlain, testUser, testSecret))
	fake := c.Fake()
	var refuse atomic.Bool
	var produced atomic.Int32
	fake.ControlKey(int16(kmsg.SASLAuthenticate), func(r kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		if !refuse.Load() {
			return nil, nil, false
		}
		resp := r.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		resp.ErrorMessage = kmsg.StringPtr("credentials revoked")
		return resp, nil, true
	})
	fake.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		if produced.Add(1) == 2 {
			refuse.Store(true)
			return nil, errors.New("connection cut after the request was written"), true
		}
		return nil, nil, false
	})
	p := newProducer(t, c, kpush.WithSASL(kpush.SASLPlain(testUser, testSecret)))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "uk", Value: []byte("0")}); err != nil {
		t.Fatal(err)
	}
	_, err := p.Send(ctx, &kpush.Record{Topic: "uk", Value: []byte("1")})
	if !errors.Is(err, kpush.ErrAuthentication) || !errors.Is(err, kpush.ErrOutcomeUnknown) || errors.Is(err, kpush.ErrNotWritten) {
		t.Fatalf("record 1 = %v; want ErrAuthentication and ErrOutcomeUnknown, not ErrNotWritten", err)
	}
	refuse.Store(false)
	for i := 2; i < 30; i++ {
		if _, err := p.Send(ctx, &kpush.Record{Topic: "uk", Value: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatalf("record %d after the credentials were accepted again: %v", i, err)
		}
	}
	recs, err := c.ReadAll(ctx, "uk")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, r := range recs {
		seen[string(r.Value)]++
	}
	for i := range 30 {
		if v := strconv.Itoa(i); i != 1 && seen[v] != 1 {
			t.Errorf("record %d is in the topic %d times", i, seen[v])
		}
	}
}

// TestWithTLS_ConfigCopiedAtNew: a tls.Config changed after New does not
// change the producer (options are fixed at New), and changing it while
// the producer dials is no data race.
func TestWithTLS_ConfigCopiedAtNew(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("tlscopy", 1), kafkatest.WithTLS(false))
	cfg := c.TLSConfig()
	p := newProducer(t, c, kpush.WithTLS(cfg))
	cfg.RootCAs = nil // e.g. the caller reuses its config for something else
	if _, err := p.Send(testCtx(t), &kpush.Record{Topic: "tlscopy", Value: []byte("v")}); err != nil {
		t.Fatalf("Send after the caller changed its tls.Config: %v", err)
	}
}

// TestSend_PlaintextToTLS12MutualListener: a plaintext producer pointed at
// a TLS 1.2 listener that requires client certificates is told at once
// that the broker expects TLS. The listener answers the probe's
// ClientHello with a TLS alert, which must count as "speaks TLS".
func TestSend_PlaintextToTLS12MutualListener(t *testing.T) {
	b, err := tlsgen.New()
	if err != nil {
		t.Fatal(err)
	}
	sc := b.ServerConfig(true)
	sc.MaxVersion = tls.VersionTLS12
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("p", 1), kafkatest.WithKfakeOptions(kfake.TLS(sc)))
	p := newProducer(t, c, kpush.WithDeliveryTimeout(5*time.Second), kpush.WithRequestTimeout(2*time.Second))
	start := time.Now()
	_, err = p.Send(testCtx(t), &kpush.Record{Topic: "p", Value: []byte("v")})
	t.Logf("after %v: %v", time.Since(start), err)
	if !errors.Is(err, kpush.ErrAuthentication) || !strings.Contains(err.Error(), "expects TLS") {
		t.Errorf("want ErrAuthentication saying the broker expects TLS")
	}
}

// TestNew_TLSMaxVersionBelow12: a MaxVersion below TLS 1.2 leaves no
// version kpush accepts; New says so instead of every handshake failing
// (not as ErrAuthentication) until the delivery timeout.
func TestNew_TLSMaxVersionBelow12(t *testing.T) {
	_, err := kpush.New(kpush.WithBrokers("127.0.0.1:1"), kpush.WithTLS(&tls.Config{MaxVersion: tls.VersionTLS11}))
	var ce *kpush.ConfigError
	if !errors.As(err, &ce) || ce.Option != "WithTLS" {
		t.Fatalf("New = %v; want a *ConfigError naming WithTLS", err)
	}
}
