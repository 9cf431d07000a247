package wire_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kpush/kpush/internal/wire"
)

const secret = "s3cret-pa55"

// saslCluster starts a one-broker kfake cluster requiring SASL, with user
// "alice" for each mechanism, plus any extra options.
func saslCluster(t *testing.T, extra ...kfake.Opt) (*kfake.Cluster, string) {
	t.Helper()
	opts := append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(1, "t"), kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "alice", secret),
		kfake.Superuser("SCRAM-SHA-256", "alice", secret),
		kfake.Superuser("SCRAM-SHA-512", "alice", secret),
	}, extra...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()[0]
}

func mechanisms(user, pass string) map[string]sasl.Mechanism {
	return map[string]sasl.Mechanism{
		"PLAIN":         plain.Auth{User: user, Pass: pass}.AsMechanism(),
		"SCRAM-SHA-256": scram.Auth{User: user, Pass: pass}.AsSha256Mechanism(),
		"SCRAM-SHA-512": scram.Auth{User: user, Pass: pass}.AsSha512Mechanism(),
	}
}

func TestDial_SASLMechanisms(t *testing.T) {
	_, addr := saslCluster(t)
	for name, m := range mechanisms("alice", secret) {
		t.Run(name, func(t *testing.T) {
			var hooks atomic.Int32
			c := dial(t, addr, &wire.Config{SASL: m, AuthHook: func(_ string, reauth bool, err error) {
				if err != nil || reauth {
					t.Errorf("AuthHook(reauth=%v, %v), want a first success", reauth, err)
				}
				hooks.Add(1)
			}})
			if _, err := c.Request(context.Background(), metadataReq("t")); err != nil {
				t.Fatalf("metadata after SASL: %v", err)
			}
			if hooks.Load() != 1 {
				t.Errorf("AuthHook ran %d times, want 1", hooks.Load())
			}
		})
	}
}

func TestDial_SASLFailures(t *testing.T) {
	cl, addr := saslCluster(t)
	// A real broker answers bad credentials with an error code and a
	// message (KIP-152); kfake closes the connection instead, which is no
	// verdict (TestDial_SASLClosedIsRetriable).
	cl.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cl.KeepControl()
		if !strings.Contains(string(req.(*kmsg.SASLAuthenticateRequest).SASLAuthBytes), "mallory") {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		resp.ErrorMessage = kmsg.StringPtr("Authentication failed: Invalid username or password")
		return resp, nil, true
	})
	// Kafka answers a SaslHandshake on a listener without SASL so.
	cl.ControlKey(int16(kmsg.SASLHandshake), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cl.KeepControl()
		if req.(*kmsg.SASLHandshakeRequest).Mechanism != "X-NO-SASL-LISTENER" {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
		resp.ErrorCode = kerr.IllegalSaslState.Code
		return resp, nil, true
	})
	for _, tc := range []struct {
		name string
		mech sasl.Mechanism
		want []string
	}{
		{"listener without SASL", renamed{mechanisms("alice", secret)["PLAIN"], "X-NO-SASL-LISTENER"}, []string{"ILLEGAL_SASL_STATE", "security.protocol"}},
		{"broker message", mechanisms("mallory", secret)["PLAIN"], []string{"SASL_AUTHENTICATION_FAILED", "Invalid username or password"}},
		{"wrong mechanism", renamed{mechanisms("alice", secret)["PLAIN"], "GSSAPI"}, []string{"UNSUPPORTED_SASL_MECHANISM", "SCRAM-SHA-256"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.mech
			var hookErr atomic.Pointer[error]
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			start := time.Now()
			c, err := wire.Dial(ctx, addr, &wire.Config{SASL: m, AuthHook: func(_ string, _ bool, err error) { hookErr.Store(&err) }})
			if c != nil || !errors.Is(err, wire.ErrAuth) {
				t.Fatalf("Dial = %v, %v; want ErrAuth", c, err)
			}
			if time.Since(start) > 3*time.Second {
				t.Errorf("Dial took %v to fail", time.Since(start))
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q contains the password", err)
			}
			if h := hookErr.Load(); h == nil || !errors.Is(*h, wire.ErrAuth) {
				t.Errorf("AuthHook did not see the failure")
			}
		})
	}
}

// TestDial_SASLClosedIsRetriable: a broker that closes the connection in
// the middle of the SASL exchange (kfake does so for a wrong password or
// an unknown user; so does a broker restart) gives no verdict on the
// credentials: Dial fails with ErrSASLClosed, not ErrAuth, and AuthHook
// does not report an authentication failure. Only one connection is
// tried; the caller retries with its backoff.
func TestDial_SASLClosedIsRetriable(t *testing.T) {
	_, addr := saslCluster(t)
	for name, m := range map[string]sasl.Mechanism{
		"closed after client-final (wrong password)": mechanisms("alice", "wrong-"+secret)["SCRAM-SHA-256"],
		"closed after client-first (unknown user)":   mechanisms("bob", secret)["SCRAM-SHA-512"],
	} {
		t.Run(name, func(t *testing.T) {
			var hooks atomic.Int32
			var dials atomic.Int32
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			c, err := wire.Dial(ctx, addr, &wire.Config{
				SASL:     m,
				AuthHook: func(string, bool, error) { hooks.Add(1) },
				Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
					dials.Add(1)
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				},
			})
			if c != nil || !errors.Is(err, wire.ErrSASLClosed) || errors.Is(err, wire.ErrAuth) {
				t.Fatalf("Dial = %v, %v; want ErrSASLClosed, not ErrAuth", c, err)
			}
			if hooks.Load() != 0 {
				t.Errorf("AuthHook reported %d authentication failures for a closed connection", hooks.Load())
			}
			if dials.Load() != 1 {
				t.Errorf("Dial made %d connections, want 1 (retrying is the caller's job, with backoff)", dials.Load())
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}

// renamed announces a mechanism under another name.
type renamed struct {
	sasl.Mechanism
	name string
}

func (r renamed) Name() string { return r.name }

func TestDial_SASLTokenProviderError(t *testing.T) {
	_, addr := saslCluster(t)
	errIAM := errors.New("iam endpoint unreachable")
	_, err := wire.Dial(context.Background(), addr, &wire.Config{SASL: failingMech{errIAM}})
	if !errors.Is(err, wire.ErrAuth) || !errors.Is(err, errIAM) {
		t.Fatalf("Dial = %v; want ErrAuth wrapping the provider's error", err)
	}
}

type failingMech struct{ err error }

func (failingMech) Name() string { return "PLAIN" }
func (f failingMech) Authenticate(context.Context, string) (sasl.Session, []byte, error) {
	return nil, nil, f.err
}

// writeLog is a net.Conn that records the API key of every request frame
// written, so a test can see what the client sent and when; each write of
// a key in watch is also reported on wrote.
type writeLog struct {
	net.Conn
	mu    sync.Mutex
	keys  []int16
	watch map[int16]bool
	wrote chan int16
}

func (w *writeLog) Write(b []byte) (int, error) {
	if len(b) >= 6 {
		key := int16(binary.BigEndian.Uint16(b[4:6]))
		w.mu.Lock()
		w.keys = append(w.keys, key)
		if w.watch[key] {
			select {
			case w.wrote <- key:
			default:
			}
		}
		w.mu.Unlock()
	}
	return w.Conn.Write(b)
}

func (w *writeLog) count(key kmsg.Key) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, k := range w.keys {
		if k == int16(key) {
			n++
		}
	}
	return n
}

// startWatch starts reporting writes of keys on w.wrote.
func (w *writeLog) startWatch(keys ...kmsg.Key) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.watch = map[int16]bool{}
	for _, k := range keys {
		w.watch[int16(k)] = true
	}
	w.wrote = make(chan int16, len(keys)+1)
}

// TestDo_Reauthenticates checks KIP-368 re-authentication: a request due
// after the renewal point waits for the request in flight (no SaslHandshake
// and no request is written while it is pending), then the session is
// renewed on the same connection and both requests succeed. The session is
// made due with ExpireSession instead of waiting for it; the test waits
// until the renewal has stopped to wait for the in-flight request, or
// fails as soon as the client writes a SaslHandshake or the request.
func TestDo_Reauthenticates(t *testing.T) {
	cl, addr := saslCluster(t, kfake.BrokerConfigs(map[string]string{"connections.max.reauth.ms": "3600000"}))
	var wl *writeLog
	var reauths atomic.Int32
	reauthWaiting := make(chan struct{}, 1)
	cfg := &wire.Config{
		SASL: mechanisms("alice", secret)["SCRAM-SHA-256"],
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				wl = &writeLog{Conn: nc}
				return wl, nil
			}
			return nil, err
		},
		AuthHook: func(_ string, reauth bool, err error) {
			if err != nil {
				t.Errorf("AuthHook: %v", err)
			}
			if reauth {
				reauths.Add(1)
			}
		},
	}
	wire.SetReauthWaitingHook(cfg, func() {
		select {
		case reauthWaiting <- struct{}{}:
		default:
		}
	})
	c := dial(t, addr, cfg)
	if n := wl.count(kmsg.SASLHandshake); n != 1 {
		t.Fatalf("%d SaslHandshakes after Dial, want 1", n)
	}

	// The broker holds the first request until release is closed.
	release := make(chan struct{})
	var once sync.Once
	releaseHeld := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseHeld)
	held := make(chan struct{}, 1)
	cl.ControlKey(int16(kmsg.ListOffsets), func(kmsg.Request) (kmsg.Response, error, bool) {
		held <- struct{}{}
		cl.SleepControl(func() { <-release })
		return nil, nil, false
	})
	first := newResult()
	if err := c.Do(kmsg.NewPtrListOffsetsRequest(), false, first.done); err != nil {
		t.Fatal(err)
	}
	recv(t, held, "held ListOffsets")
	wire.ExpireSession(c) // past the renewal point
	wl.startWatch(kmsg.SASLHandshake, kmsg.Metadata)

	second := newResult()
	issued := make(chan error, 1)
	go func() { issued <- c.Do(metadataReq("t"), false, second.done) }()
	select {
	case <-reauthWaiting:
	case key := <-wl.wrote:
		t.Fatalf("%s was written while a request was in flight", kmsg.Key(key).Name())
	case <-time.After(waitTimeout):
		t.Fatal("Do past the renewal point neither waited for the in-flight request nor wrote anything")
	}
	if n := wl.count(kmsg.SASLHandshake); n != 1 {
		t.Fatalf("a SaslHandshake was written while a request was in flight")
	}
	if n := wl.count(kmsg.Metadata); n != 0 {
		t.Fatalf("a request was written before re-authentication")
	}
	releaseHeld()
	if _, err := first.wait(t, "the held request"); err != nil {
		t.Fatalf("in-flight request failed across re-authentication: %v", err)
	}
	if err := recv(t, issued, "Do after the renewal point"); err != nil {
		t.Fatal(err)
	}
	if _, err := second.wait(t, "request after re-authentication"); err != nil {
		t.Fatalf("request after re-authentication: %v", err)
	}
	if n := wl.count(kmsg.SASLHandshake); n != 2 || reauths.Load() != 1 {
		t.Fatalf("%d SaslHandshakes, %d re-authentications; want 2 and 1", n, reauths.Load())
	}
}
