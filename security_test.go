package kpush_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

const (
	testUser   = "alice"
	testSecret = "pa55-w0rd-never-logged"
	testToken  = "eyJ.valid-token.sig"
)

var mechanisms = map[string]func(user, pass string) kpush.SASLMechanism{
	kafkatest.SASLPlain:       kpush.SASLPlain,
	kafkatest.SASLScramSHA256: kpush.SASLScramSHA256,
	kafkatest.SASLScramSHA512: kpush.SASLScramSHA512,
}

// oauthPrincipal is the hidden PLAIN user a valid OAUTHBEARER token stands
// for in withOAuthBearer.
const oauthPrincipal, oauthHidden = "oauth-principal", "hidden-plain-secret"

// withOAuthBearer teaches a cluster started WithSASL(PLAIN, oauthPrincipal,
// oauthHidden) to accept OAUTHBEARER, which kfake lacks: a SaslHandshake
// for OAUTHBEARER is relabelled PLAIN, and a SaslAuthenticate carrying a
// token that check accepts is rewritten into the hidden PLAIN credentials,
// so kfake completes the session itself (session lifetime included). A
// token check rejects is answered like a real broker: error code and
// message.
func withOAuthBearer(c *kafkatest.Cluster, check func(token string) error) {
	fake := c.Fake()
	fake.ControlKey(int16(kmsg.SASLHandshake), func(r kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		if req := r.(*kmsg.SASLHandshakeRequest); req.Mechanism == "OAUTHBEARER" {
			req.Mechanism = "PLAIN"
		}
		return nil, nil, false
	})
	fake.ControlKey(int16(kmsg.SASLAuthenticate), func(r kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		req := r.(*kmsg.SASLAuthenticateRequest)
		msg := string(req.SASLAuthBytes)
		if !strings.HasPrefix(msg, "n,") { // not an OAUTHBEARER client first message
			return nil, nil, false
		}
		_, token, _ := strings.Cut(msg, "auth=Bearer ")
		token, _, _ = strings.Cut(token, "\x01")
		if err := check(token); err != nil {
			resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
			resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
			resp.ErrorMessage = kmsg.StringPtr(`{"status":"invalid_token"}: ` + err.Error())
			return resp, nil, true
		}
		req.SASLAuthBytes = []byte("\x00" + oauthPrincipal + "\x00" + oauthHidden)
		return nil, nil, false
	})
}

func checkToken(token string) error {
	switch token {
	case testToken:
		return nil
	case "expired-token":
		return errors.New("token expired at 2026-11-29T08:00:00Z")
	}
	return errors.New("unknown token")
}

// sendAndReadBack sends n records and checks that each is in the topic
// exactly once.
func sendAndReadBack(t *testing.T, c *kafkatest.Cluster, p *kpush.Producer, topic string, n int) {
	t.Helper()
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Send(ctx, &kpush.Record{Topic: topic, Value: []byte(strconv.Itoa(i))}); err != nil {
				t.Errorf("Send %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	checkExactlyOnce(t, c, topic, n)
}

// checkExactlyOnce reads topic back and checks it holds values 0..n-1,
// each once.
func checkExactlyOnce(t *testing.T, c *kafkatest.Cluster, topic string, n int) {
	t.Helper()
	recs, err := c.ReadAll(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]int, n)
	for _, r := range recs {
		seen[string(r.Value)]++
	}
	for i := range n {
		if got := seen[strconv.Itoa(i)]; got != 1 {
			t.Errorf("record %d written %d times", i, got)
		}
	}
	if len(recs) != n {
		t.Errorf("%d records in the topic, want %d", len(recs), n)
	}
}

// TestSASL_RoundTrip produces with every mechanism, over plaintext and TLS,
// and reads every record back exactly once.
func TestSASL_RoundTrip(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		for name, mech := range mechanisms {
			t.Run(fmt.Sprintf("%s/tls=%v", name, useTLS), func(t *testing.T) {
				opts := []kafkatest.Option{kafkatest.WithTopic("sec", 3), kafkatest.WithSASL(name, testUser, testSecret)}
				if useTLS {
					opts = append(opts, kafkatest.WithTLS(false))
				}
				c := kafkatest.NewTestCluster(t, opts...)
				popts := []kpush.Option{kpush.WithSASL(mech(testUser, testSecret))}
				if useTLS {
					popts = append(popts, kpush.WithTLS(c.TLSConfig()))
				}
				p := newProducer(t, c, popts...)
				sendAndReadBack(t, c, p, "sec", 50)
				if s := p.Stats(); s.AuthFailures != 0 {
					t.Errorf("AuthFailures = %d, want 0", s.AuthFailures)
				}
			})
		}
	}
	t.Run("OAUTHBEARER/tls=true", func(t *testing.T) {
		c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("sec", 3), kafkatest.WithTLS(false),
			kafkatest.WithSASL(kafkatest.SASLPlain, oauthPrincipal, oauthHidden))
		withOAuthBearer(c, checkToken)
		var calls atomic.Int32
		p := newProducer(t, c, kpush.WithTLS(c.TLSConfig()), kpush.WithSASL(kpush.SASLOAuthBearer(func(context.Context) (string, error) {
			calls.Add(1)
			return testToken, nil
		})))
		sendAndReadBack(t, c, p, "sec", 50)
		if calls.Load() < 2 { // the metadata connection and the broker's produce connection
			t.Errorf("token provider called %d times, want one per connection", calls.Load())
		}
	})
}

// TestSASL_Reauthenticates produces without pause across several 1s SASL
// sessions: every session is renewed in time on the same connections, no
// record fails and none is written twice.
func TestSASL_Reauthenticates(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("reauth", 3),
		kafkatest.WithSASL(kafkatest.SASLScramSHA512, testUser, testSecret),
		kafkatest.WithKfakeOptions(kfake.BrokerConfigs(map[string]string{"connections.max.reauth.ms": "1000"})))
	p := newProducer(t, c, kpush.WithSASL(kpush.SASLScramSHA512(testUser, testSecret)))
	ctx := testCtx(t)
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		stop  = time.Now().Add(2500 * time.Millisecond)
		maxRT atomic.Int64
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				i := next.Add(1) - 1
				start := time.Now()
				if _, err := p.Send(ctx, &kpush.Record{Topic: "reauth", Value: []byte(strconv.FormatInt(i, 10))}); err != nil {
					t.Errorf("Send %d: %v", i, err)
					return
				}
				if d := int64(time.Since(start)); d > maxRT.Load() {
					maxRT.Store(d)
				}
			}
		}()
	}
	wg.Wait()
	s := p.Stats()
	t.Logf("%d records, %d re-authentications, slowest Send %v", next.Load(), s.Reauthentications, time.Duration(maxRT.Load()))
	// The produce connection renews every ~0.5s; the idle metadata
	// connection only on its next request.
	if s.Reauthentications < 3 {
		t.Errorf("Reauthentications = %d, want at least 3 in 2.5s of 1s sessions", s.Reauthentications)
	}
	checkExactlyOnce(t, c, "reauth", int(next.Load()))
}

// authFailureCase is a misconfiguration that must fail Send quickly with
// ErrAuthentication.
type authFailureCase struct {
	name    string
	cluster []kafkatest.Option
	setup   func(c *kafkatest.Cluster)
	opts    func(c *kafkatest.Cluster) []kpush.Option
	want    string // in the error
}

func authFailureCases() []authFailureCase {
	scram := kafkatest.WithSASL(kafkatest.SASLScramSHA256, testUser, testSecret)
	return []authFailureCase{
		{name: "wrong password", cluster: []kafkatest.Option{scram},
			opts: func(*kafkatest.Cluster) []kpush.Option {
				return []kpush.Option{kpush.WithSASL(kpush.SASLScramSHA256(testUser, "wrong-"+testSecret))}
			}, want: "SCRAM-SHA-256"},
		{name: "unknown user", cluster: []kafkatest.Option{scram},
			opts: func(*kafkatest.Cluster) []kpush.Option {
				return []kpush.Option{kpush.WithSASL(kpush.SASLScramSHA256("mallory", testSecret))}
			}, want: "SCRAM-SHA-256"},
		{name: "wrong mechanism", cluster: []kafkatest.Option{scram},
			opts: func(*kafkatest.Cluster) []kpush.Option {
				return []kpush.Option{kpush.WithSASL(kpush.SASLOAuthBearer(func(context.Context) (string, error) { return testSecret, nil }))}
			}, want: "UNSUPPORTED_SASL_MECHANISM"},
		{name: "expired token", cluster: []kafkatest.Option{kafkatest.WithSASL(kafkatest.SASLPlain, oauthPrincipal, oauthHidden)},
			setup: func(c *kafkatest.Cluster) { withOAuthBearer(c, checkToken) },
			opts: func(*kafkatest.Cluster) []kpush.Option {
				return []kpush.Option{kpush.WithSASL(kpush.SASLOAuthBearer(func(context.Context) (string, error) { return "expired-token", nil }))}
			}, want: "token expired"},
		{name: "token provider error", cluster: []kafkatest.Option{kafkatest.WithSASL(kafkatest.SASLPlain, oauthPrincipal, oauthHidden)},
			setup: func(c *kafkatest.Cluster) { withOAuthBearer(c, checkToken) },
			opts: func(*kafkatest.Cluster) []kpush.Option {
				return []kpush.Option{kpush.WithSASL(kpush.SASLOAuthBearer(func(context.Context) (string, error) {
					return "", errors.New("metadata service unreachable")
				}))}
			}, want: "metadata service unreachable"},
		{name: "SASL client to plaintext broker", cluster: nil,
			opts: func(*kafkatest.Cluster) []kpush.Option {
				return []kpush.Option{kpush.WithSASL(kpush.SASLPlain(testUser, testSecret))}
			}, want: "SASL PLAIN"},
		{name: "plaintext client to TLS listener", cluster: []kafkatest.Option{kafkatest.WithTLS(false)},
			opts: func(*kafkatest.Cluster) []kpush.Option { return nil }, want: "expects TLS"},
		{name: "untrusted certificate", cluster: []kafkatest.Option{kafkatest.WithTLS(false)},
			opts: func(*kafkatest.Cluster) []kpush.Option { return []kpush.Option{kpush.WithTLS(nil)} },
			want: "certificate"},
		{name: "no client certificate", cluster: []kafkatest.Option{kafkatest.WithTLS(true)},
			opts: func(c *kafkatest.Cluster) []kpush.Option {
				cfg := c.TLSConfig()
				cfg.Certificates = nil
				return []kpush.Option{kpush.WithTLS(cfg)}
			}, want: "certificate"},
	}
}

// TestSend_AuthFailuresAreFastAndDefinite: each misconfiguration fails Send
// within seconds (not the 2 minute delivery timeout) with an error that
// matches ErrAuthentication and ErrNotWritten, names the problem, and
// never shows the secret — nor do Stats and the log. Nothing is written.
func TestSend_AuthFailuresAreFastAndDefinite(t *testing.T) {
	for _, tc := range authFailureCases() {
		t.Run(tc.name, func(t *testing.T) {
			c := kafkatest.NewTestCluster(t, append([]kafkatest.Option{kafkatest.WithTopic("sec", 2)}, tc.cluster...)...)
			if tc.setup != nil {
				tc.setup(c)
			}
			var log syncBuffer
			p := newProducer(t, c, append(tc.opts(c), kpush.WithLogger(slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))))...)
			for i := range 3 { // the first Send and later ones: no silent retry loop
				start := time.Now()
				_, err := p.Send(testCtx(t), &kpush.Record{Topic: "sec", Value: []byte("v")})
				took := time.Since(start)
				if !errors.Is(err, kpush.ErrAuthentication) || !errors.Is(err, kpush.ErrNotWritten) {
					t.Fatalf("Send %d = %v; want ErrAuthentication, ErrNotWritten", i, err)
				}
				var pe *kpush.ProduceError
				if !errors.As(err, &pe) {
					t.Fatalf("Send error %T is not a *ProduceError", err)
				}
				if took > 5*time.Second {
					t.Errorf("Send %d took %v to fail", i, took)
				}
				if i == 0 {
					t.Logf("after %v: %v", took.Round(time.Millisecond), err)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %q does not mention %q", err, tc.want)
				}
			}
			s := p.Stats()
			if s.AuthFailures == 0 || s.LastAuthError == "" {
				t.Errorf("Stats: AuthFailures=%d LastAuthError=%q; want the failure counted", s.AuthFailures, s.LastAuthError)
			}
			if !strings.Contains(log.String(), "authentication failed") {
				t.Errorf("the log does not report the failure:\n%s", log.String())
			}
			for what, text := range map[string]string{"Stats": fmt.Sprintf("%+v", s), "log": log.String()} {
				if strings.Contains(text, testSecret) || strings.Contains(text, oauthHidden) {
					t.Errorf("%s shows a secret: %s", what, text)
				}
			}
			checkExactlyOnce(t, c, "sec", 0)
		})
	}
}

// TestSend_AuthFailureOnProduceConnection: metadata works, but the broker
// then refuses the produce connection (credentials revoked in between).
// Buffered records fail at once with ErrAuthentication; once the broker
// accepts the credentials again, sending works and nothing was written
// twice.
func TestSend_AuthFailureOnProduceConnection(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("sec", 2), kafkatest.WithSASL(kafkatest.SASLPlain, testUser, testSecret))
	var refuse atomic.Bool
	var authed atomic.Int32
	fake := c.Fake()
	fake.ControlKey(int16(kmsg.SASLAuthenticate), func(r kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		if authed.Add(1) == 1 || !refuse.Load() { // the first is the metadata connection
			return nil, nil, false
		}
		resp := r.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		resp.ErrorMessage = kmsg.StringPtr("credentials revoked")
		return resp, nil, true
	})
	refuse.Store(true)
	p := newProducer(t, c, kpush.WithSASL(kpush.SASLPlain(testUser, testSecret)))
	ctx := testCtx(t)
	const n = 20
	errs := make(chan error, n)
	start := time.Now()
	for i := range n {
		p.SendAsync(ctx, &kpush.Record{Topic: "sec", Value: []byte("x" + strconv.Itoa(i))}, func(_ kpush.Result, err error) { errs <- err })
	}
	for range n {
		if err := <-errs; !errors.Is(err, kpush.ErrAuthentication) || !errors.Is(err, kpush.ErrNotWritten) || !strings.Contains(err.Error(), "credentials revoked") {
			t.Fatalf("record error = %v; want ErrAuthentication, not written, with the broker's message", err)
		}
	}
	t.Logf("%d buffered records failed after %v", n, time.Since(start).Round(time.Millisecond))
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("records took %v to fail", took)
	}

	refuse.Store(false)
	sendAndReadBack(t, c, p, "sec", 20)
}

// TestTLSConfigFromFiles connects with mutual TLS configured from PEM
// files, and checks the helper's errors.
func TestTLSConfigFromFiles(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("sec", 2), kafkatest.WithTLS(true))
	f, err := c.WriteTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := kpush.TLSConfigFromFiles(f.CA, f.ClientCert, f.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want TLS 1.2", cfg.MinVersion)
	}
	p := newProducer(t, c, kpush.WithTLS(cfg))
	sendAndReadBack(t, c, p, "sec", 10)

	for _, bad := range [][3]string{
		{"/nonexistent/ca.pem", "", ""},
		{f.ClientKey, "", ""}, // not a certificate
		{f.CA, f.ClientCert, ""},
		{f.CA, f.ClientCert, f.ServerKey}, // mismatched key
	} {
		if _, err := kpush.TLSConfigFromFiles(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("TLSConfigFromFiles(%q) succeeded", bad)
		}
	}
}

// TestNew_InvalidSecurityOptions: bad security options are *ConfigError
// naming the option.
func TestNew_InvalidSecurityOptions(t *testing.T) {
	for name, opt := range map[string]kpush.Option{
		"nil mechanism":   kpush.WithSASL(nil),
		"empty user":      kpush.WithSASL(kpush.SASLScramSHA256("", "p")),
		"empty password":  kpush.WithSASL(kpush.SASLPlain("u", "")),
		"nil token func":  kpush.WithSASL(kpush.SASLOAuthBearer(nil)),
		"TLS 1.0 allowed": kpush.WithTLS(&tls.Config{MinVersion: tls.VersionTLS10}),
	} {
		_, err := kpush.New(kpush.WithBrokers("localhost:9092"), opt)
		var ce *kpush.ConfigError
		if !errors.As(err, &ce) || (ce.Option != "WithSASL" && ce.Option != "WithTLS") {
			t.Errorf("%s: New = %v, want a *ConfigError for WithSASL or WithTLS", name, err)
		}
	}
}

// TestClose_NoGoroutineLeakAfterAuthFailures: failed handshakes, TLS
// probes and rejected SASL exchanges leave no goroutine behind: every
// goroutine each producer started (found by a pprof label, so other
// tests' goroutines cannot mask a leak) is gone after Close.
func TestClose_NoGoroutineLeakAfterAuthFailures(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("sec", 2), kafkatest.WithTLS(false),
		kafkatest.WithSASL(kafkatest.SASLScramSHA256, testUser, testSecret))
	ctx := testCtx(t)
	for name, opts := range map[string][]kpush.Option{
		"plaintext":      nil,
		"untrusted":      {kpush.WithTLS(nil)},
		"wrong password": {kpush.WithTLS(c.TLSConfig()), kpush.WithSASL(kpush.SASLScramSHA256(testUser, "x"))},
		"working":        {kpush.WithTLS(c.TLSConfig()), kpush.WithSASL(kpush.SASLScramSHA256(testUser, testSecret))},
	} {
		var p *kpush.Producer
		var err error
		withLeakLabel(name, func() { p, err = kpush.New(append(opts, kpush.WithBrokers(c.Addrs()...))...) })
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.Send(ctx, &kpush.Record{Topic: "sec", Value: []byte(name)})
		if (name == "working") != (err == nil) {
			t.Errorf("%s: Send = %v", name, err)
		}
		if n, _ := labelledGoroutines(name); n == 0 {
			t.Fatalf("%s: no labelled goroutine while the producer runs; the check would see nothing", name)
		}
		if err := p.Close(ctx); err != nil {
			t.Fatal(err)
		}
		checkNoLabelledGoroutines(t, name)
	}
}
