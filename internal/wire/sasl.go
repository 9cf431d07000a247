package wire

// Securing a connection: TLS handshake, SASL authentication (KIP-152) and
// re-authentication (KIP-368).
//
// Ownership: authenticateLocked and reauthenticateLocked run with Conn.wmu
// held, so no other request is written while an authentication exchange is
// on the wire; their responses are read by the reader goroutine like any
// other. reauthAt, sessionEnd and renewing are guarded by wmu. Before a
// re-authentication, the mechanism's Authenticate (user code) runs with
// wmu released (renewLocked); on Dial the connection is not shared yet.
//
// Re-authentication strategy (one of the two KIP-368 allows): on the same
// connection. When the session nears its end, the next Do asks the
// mechanism for credentials with wmu released (other requests still go
// out while the session holds), then stops issuing (it holds wmu), waits
// until every pending call has been answered (those were sent inside the
// still-valid session), runs SaslHandshake and
// SaslAuthenticate again, and then sends its own request. Nothing in flight
// is dropped or resent, and no request overlaps the exchange, which brokers
// require. An idle connection renews lazily, on its next request; brokers
// accept a SaslHandshake even after the session expired.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"

	"github.com/kpush/kpush/internal/clock"
)

// ErrAuth is wrapped by every failure to authenticate or secure a
// connection: a SASL failure (bad credentials, unsupported mechanism, a
// token provider error), a TLS certificate that cannot be verified, or a
// plaintext connection to a broker that expects TLS. Retrying cannot help
// until the configuration or the credentials change. Its text is that of
// the public kpush.ErrAuthentication, which is this value.
var ErrAuth = errors.New("kpush: authentication failed")

// authFailed reports a TLS failure while dialing (err should wrap
// ErrAuth; no lock is held) to the AuthHook and OnEvent, and returns it.
func (cfg *Config) authFailed(node int32, addr string, err error) error {
	if !errors.Is(err, ErrAuth) {
		return err
	}
	if cfg.AuthHook != nil {
		cfg.AuthHook(addr, false, err)
	}
	if cfg.OnEvent != nil {
		cfg.OnEvent(Event{Kind: Authenticated, Node: node, Addr: addr, Err: err})
	}
	return err
}

// handshakeTLS runs the client TLS handshake over nc, TLS 1.2 at least,
// with the broker's host as the server name unless one is configured.
// Certificate problems and TLS alerts wrap ErrAuth.
func handshakeTLS(ctx context.Context, nc net.Conn, addr string, cfg *tls.Config) (net.Conn, error) {
	tc := cfg.Clone()
	if tc.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			tc.ServerName = host
		}
	}
	tc.MinVersion = max(tc.MinVersion, tls.VersionTLS12)
	tlsConn := tls.Client(nc, tc)
	if err := tlsConn.HandshakeContext(ctx); err != nil {
		nc.Close()
		if isTLSRejection(err) {
			return nil, fmt.Errorf("%w: tls handshake with %s: %w", ErrAuth, addr, err)
		}
		return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
	}
	return tlsConn, nil
}

// isTLSRejection reports whether a handshake failed for a reason that a
// retry cannot fix: a certificate we do not trust (or the wrong host), the
// broker refusing us (an alert, e.g. no client certificate), or a listener
// that does not speak TLS.
func isTLSRejection(err error) bool {
	var (
		unknownAuth x509.UnknownAuthorityError
		hostname    x509.HostnameError
		invalid     x509.CertificateInvalidError
		verify      *tls.CertificateVerificationError
		alert       tls.AlertError
		header      tls.RecordHeaderError
		op          *net.OpError
	)
	return errors.As(err, &unknownAuth) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &verify) || errors.As(err, &alert) || errors.As(err, &header) ||
		errors.As(err, &op) && op.Op == "remote error" // the broker's TLS alert
}

// ErrSASLClosed is wrapped by a Dial that failed because the broker closed
// the connection during the SASL exchange. It is not ErrAuth: brokers since
// Kafka 1.0 (KIP-152) answer bad credentials with
// SASL_AUTHENTICATION_FAILED, and a closed connection is what a broker
// restart or a reset looks like, so it is retried like any failed dial.
// (Brokers before 1.0, and kfake, close the connection for bad
// credentials too; the error says so.)
var ErrSASLClosed = errors.New("the broker closed the connection during SASL authentication")

// closedByPeer reports whether err means the broker closed the connection.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// speaksTLS probes whether the listener at addr is a TLS listener, after a
// plaintext ApiVersions was answered by a closed connection: it dials again
// and tries a TLS handshake (certificates unchecked: nothing is sent over
// it). A completed handshake, or a TLS alert, means TLS.
func speaksTLS(ctx context.Context, addr string, cfg *Config) bool {
	if ctx.Err() != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second) // a TLS server answers a ClientHello at once
	defer cancel()
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer nc.Close()
	tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a probe; nothing is sent over it
	err = tc.HandshakeContext(ctx)
	// Over TCP a TLS alert from the server (e.g. a TLS 1.2 listener that
	// requires a client certificate) is a *net.OpError "remote error";
	// tls.AlertError is only QUIC's.
	var op *net.OpError
	return err == nil || errors.As(err, &op) && op.Op == "remote error"
}

// authenticateLocked runs SaslHandshake and SaslAuthenticate with
// cfg.SASL and schedules re-authentication when the broker grants a
// limited session. Every error wraps ErrAuth; none contains a credential
// (only mechanism names and the broker's own messages), except that a
// connection closed by the broker mid-exchange wraps ErrSASLClosed
// instead. c.wmu is held.
func (c *Conn) authenticateLocked(ctx context.Context, reauth bool, pre *saslStart) error {
	m := c.cfg.SASL
	fail := func(format string, args ...any) error {
		args = append([]any{ErrAuth, c.addr, m.Name()}, args...)
		return c.authLocked(reauth, fmt.Errorf("%w: %s: SASL %s: "+format, args...))
	}
	// Only the broker's explicit answer is a verdict on the credentials. A
	// closed connection (a restart, a reset; or, from brokers before
	// KIP-152, bad credentials), a timeout or our own Close is retried.
	reqErr := func(step string, err error) error {
		if closedByPeer(err) {
			return fmt.Errorf("%s with %s: %w (brokers before Kafka 1.0 do this for a wrong user name or password): %w", step, c.addr, ErrSASLClosed, err)
		}
		return fmt.Errorf("%s with %s: %w", step, c.addr, err)
	}
	if c.Version(int16(kmsg.SASLHandshake)) < 1 || c.Version(int16(kmsg.SASLAuthenticate)) < 0 {
		return fail("the broker does not support SaslHandshake v1 and SaslAuthenticate")
	}
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Mechanism = m.Name()
	r, err := c.requestLocked(ctx, hs)
	if err != nil {
		return reqErr("SaslHandshake", err)
	}
	if hr := r.(*kmsg.SASLHandshakeResponse); hr.ErrorCode != 0 {
		if hr.ErrorCode == kerr.IllegalSaslState.Code {
			// Kafka's answer on a listener without SASL.
			return fail("%w (is SASL enabled on this listener? check security.protocol)", kerr.IllegalSaslState)
		}
		return fail("%w (the broker enables %v)", kerr.ErrorForCode(hr.ErrorCode), hr.SupportedMechanisms)
	}
	if pre == nil {
		pre = &saslStart{}
		pre.sess, pre.msg, pre.err = m.Authenticate(ctx, c.addr)
	}
	sess, msg := pre.sess, pre.msg
	if err := pre.err; err != nil {
		return fail("%w", err) // e.g. the token provider failed
	}
	var lifetime int64
	start := clock.Mono()
	for done := false; !done || len(msg) > 0; {
		req := kmsg.NewPtrSASLAuthenticateRequest()
		req.SASLAuthBytes = msg
		start = clock.Mono()
		r, err := c.requestLocked(ctx, req)
		if err != nil {
			return reqErr("SaslAuthenticate", err)
		}
		ar := r.(*kmsg.SASLAuthenticateResponse)
		if err := kerr.ErrorForCode(ar.ErrorCode); err != nil {
			if ar.ErrorMessage != nil && *ar.ErrorMessage != "" {
				return fail("%w: %s", err, *ar.ErrorMessage)
			}
			return fail("%w", err)
		}
		lifetime = ar.SessionLifetimeMillis
		msg = nil
		if !done {
			if done, msg, err = sess.Challenge(ar.SASLAuthBytes); err != nil {
				return fail("%w", err)
			}
		}
	}
	c.reauthAt, c.sessionEnd = 0, 0
	if lifetime > 0 {
		life := time.Duration(min(lifetime, 365*24*3600*1000)) * time.Millisecond
		c.reauthAt = start + int64(reauthAfter(life))
		c.sessionEnd = start + int64(life)
	}
	c.renewAt.Store(c.reauthAt)
	return c.authLocked(reauth, nil) // reported by unlockWrite, after wmu
}

// reauthAfter is how long after sending the final SaslAuthenticate a
// session of the given lifetime is renewed: at 85% of it, and at least a
// second before it ends when the lifetime allows (the Java client picks
// 85–95%). The margin covers waiting for in-flight responses first.
func reauthAfter(lifetime time.Duration) time.Duration {
	margin := max(lifetime*15/100, min(time.Second, lifetime/2))
	return lifetime - margin
}

// errRenewWait: a Do gave up waiting for another Do's renewal.
var errRenewWait = errors.New("session ended and its renewal is still getting credentials")

// saslStart is the mechanism's first step (Authenticate): a session and
// the client's first message, or the mechanism's error.
type saslStart struct {
	sess sasl.Session
	msg  []byte
	err  error
}

// RenewDue reports whether the next request on c renews its SASL session
// first (KIP-368): a caller that must not wait for that (a Send writing
// its own request, sink.kick) leaves the request to another goroutine.
func (c *Conn) RenewDue() bool {
	at := c.renewAt.Load()
	return at != 0 && clock.Mono() >= at
}

// renewLocked re-authenticates when the session is due for renewal
// (KIP-368). The mechanism's Authenticate is user code (a token provider,
// a cloud IAM call) that may be slow or call back into the producer, so it
// runs with wmu released: other callers keep sending while the session
// still holds, and wait for this renewal once it has ended. The exchange
// itself (reauthenticateLocked) runs under wmu. c.wmu is held on entry and
// on return.
func (c *Conn) renewLocked() error {
	for c.reauthAt != 0 && clock.Mono() >= c.reauthAt && c.Err() == nil {
		if ch := c.renewing; ch != nil {
			// Another Do is renewing. Requests still go out while the
			// session holds, up to half the margin reauthAfter left, so
			// a pipelined request is answered before the session ends.
			if c.sessionEnd == 0 || clock.Mono() < c.reauthAt+(c.sessionEnd-c.reauthAt)/2 {
				return nil
			}
			c.wmu.Unlock()
			t := time.NewTimer(c.requestTimeout())
			select {
			case <-ch:
			case <-c.readerDone:
			case <-t.C:
				// Likely the renewer's own user code calling back: fail this
				// request (not written), keep the connection.
				c.wmu.Lock()
				return errRenewWait
			}
			t.Stop()
			c.wmu.Lock()
			continue
		}
		ch := make(chan struct{})
		c.renewing = ch
		c.wmu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), c.requestTimeout())
		var pre saslStart
		pre.sess, pre.msg, pre.err = c.cfg.SASL.Authenticate(ctx, c.addr)
		cancel()
		c.wmu.Lock()
		c.renewing = nil
		close(ch)
		return c.reauthenticateLocked(&pre)
	}
	return nil
}

// reauthenticateLocked renews the SASL session (KIP-368) with the
// mechanism's first step already taken (pre): with c.wmu held no new
// request is written; it waits until every pending call has been
// answered, then authenticates again on the same connection.
func (c *Conn) reauthenticateLocked(pre *saslStart) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.requestTimeout())
	defer cancel()
	c.mu.Lock()
	if len(c.pending) > 0 && c.dead == nil {
		if c.idle == nil {
			c.idle = make(chan struct{})
		}
		idle := c.idle
		c.mu.Unlock()
		if h := c.cfg.testHookReauthWaiting; h != nil {
			h()
		}
		<-idle // the reader closes it when pending empties or the conn dies
	} else {
		c.mu.Unlock()
	}
	// A closed connection is no verdict here: the requests are retried on
	// a new connection, whose Dial judges the credentials.
	return c.authenticateLocked(ctx, true, pre)
}

// signalIdleLocked wakes a re-authentication waiting for pending calls to
// drain. c.mu is held.
func (c *Conn) signalIdleLocked() {
	if c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}
