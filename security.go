package kpush

// Encryption (TLS) and authentication (SASL) options. The mechanisms'
// state machines are franz-go's (pkg/sasl); the exchange, re-authentication
// and error handling are in internal/wire.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kpush/kpush/internal/wire"
)

// SASLMechanism is a SASL mechanism for WithSASL. Build one with SASLPlain,
// SASLScramSHA256, SASLScramSHA512 or SASLOAuthBearer. Any mechanism from
// franz-go's pkg/sasl tree (for example aws.ManagedStreamingIAM for Amazon
// MSK IAM) satisfies it too. A mechanism is used by every connection of a
// producer, concurrently.
type SASLMechanism interface {
	sasl.Mechanism
}

// invalidMech is a mechanism built from bad arguments; New reports it.
type invalidMech struct {
	sasl.Mechanism
	reason string
}

func checkCredentials(name, user, pass string, m sasl.Mechanism) SASLMechanism {
	switch {
	case user == "":
		return invalidMech{m, name + " needs a user name"}
	case pass == "":
		return invalidMech{m, name + " needs a password"}
	}
	return m
}

// SASLPlain authenticates with SASL/PLAIN (Java sasl.mechanism=PLAIN). The
// password crosses the network as it is, so use it with TLS (WithTLS)
// unless the network is trusted.
func SASLPlain(user, pass string) SASLMechanism {
	return checkCredentials("SASLPlain", user, pass, plain.Auth{User: user, Pass: pass}.AsMechanism())
}

// SASLScramSHA256 authenticates with SASL/SCRAM-SHA-256 (RFC 7677; Java
// sasl.mechanism=SCRAM-SHA-256). The password never crosses the network.
func SASLScramSHA256(user, pass string) SASLMechanism {
	return checkCredentials("SASLScramSHA256", user, pass, scram.Auth{User: user, Pass: pass}.AsSha256Mechanism())
}

// SASLScramSHA512 authenticates with SASL/SCRAM-SHA-512 (Java
// sasl.mechanism=SCRAM-SHA-512). The password never crosses the network.
func SASLScramSHA512(user, pass string) SASLMechanism {
	return checkCredentials("SASLScramSHA512", user, pass, scram.Auth{User: user, Pass: pass}.AsSha512Mechanism())
}

// SASLOAuthBearer authenticates with SASL/OAUTHBEARER (KIP-255; Java
// sasl.mechanism=OAUTHBEARER). token is called for every authentication —
// each new connection and each re-authentication before the broker's
// session lifetime ends (KIP-368) — so it can return a fresh token from a
// cloud IAM or OIDC provider; it should cache tokens itself and must be
// safe for concurrent use. ctx is bounded by the dial or request timeout.
// An error from token fails the authentication with an error matching
// ErrAuthentication and the token's error.
func SASLOAuthBearer(token func(ctx context.Context) (string, error)) SASLMechanism {
	m := oauth.Oauth(func(ctx context.Context) (oauth.Auth, error) {
		t, err := token(ctx)
		if err == nil && t == "" {
			err = errors.New("the token provider returned an empty token")
		}
		return oauth.Auth{Token: t}, err
	})
	if token == nil {
		return invalidMech{m, "SASLOAuthBearer needs a token function"}
	}
	return m
}

// WithSASL authenticates every broker connection with the given mechanism
// (Java security.protocol=SASL_PLAINTEXT, or SASL_SSL together with
// WithTLS; sasl.mechanism and sasl.jaas.config). Default: no
// authentication.
//
// kpush sends SaslHandshake v1 and SaslAuthenticate after version
// negotiation, and when the broker grants a limited session
// (connections.max.reauth.ms, or a token's expiry) it re-authenticates on
// the same connection before the session ends, without failing requests
// in flight (KIP-368). A failed authentication fails the records waiting
// for that broker at once with an error matching ErrAuthentication and
// ErrNotWritten (ErrOutcomeUnknown for a batch that was sent before and
// awaits a resend), carrying the broker's message but never the credentials;
// it is counted in Stats and logged at error level.
func WithSASL(m SASLMechanism) Option {
	return optionFunc(func(c *config) { c.sasl, c.saslSet = m, true })
}

// TLSConfigFromFiles builds a TLS configuration from PEM files, for
// WithTLS. caFile holds the certificates that may sign brokers'
// certificates (Java ssl.truststore.location); empty means the system's
// roots. certFile and keyFile hold the client certificate and its private
// key for mutual TLS (Java ssl.keystore.location); give both or neither.
// The configuration requires TLS 1.2 or later; the server name defaults to
// each broker's host name.
func TLSConfigFromFiles(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("kpush: tls: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kpush: tls: CA file %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case certFile != "" && keyFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("kpush: tls: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case certFile != "" || keyFile != "":
		return nil, errors.New("kpush: tls: a client certificate needs both a certificate file and a key file")
	}
	return cfg, nil
}

// validateSecurity checks the TLS and SASL options.
func (c *config) validateSecurity() error {
	if c.tls != nil && c.tls.MinVersion != 0 && c.tls.MinVersion < tls.VersionTLS12 {
		return &ConfigError{Option: "WithTLS", Reason: "MinVersion is below TLS 1.2"}
	}
	if c.tls != nil && c.tls.MaxVersion != 0 && c.tls.MaxVersion < tls.VersionTLS12 {
		// Every handshake would fail, retried until the delivery timeout.
		return &ConfigError{Option: "WithTLS", Reason: "MaxVersion is below TLS 1.2"}
	}
	if c.saslSet && c.sasl == nil {
		return &ConfigError{Option: "WithSASL", Reason: "nil mechanism"}
	}
	if im, ok := c.sasl.(invalidMech); ok {
		return &ConfigError{Option: "WithSASL", Reason: im.reason}
	}
	return nil
}

// authEvent is every connection's AuthHook: it counts and logs
// authentications and their failures (err never holds credentials).
func (p *Producer) authEvent(addr string, reauth bool, err error) {
	st := &p.eng.Stats
	if err != nil {
		st.AuthFailures.Add(1)
		msg := err.Error()
		st.LastAuthErr.Store(&msg)
		p.cfg.logger.Error("kpush: broker authentication failed", "addr", addr, "reauth", reauth, "err", err)
		return
	}
	if reauth {
		st.Reauths.Add(1)
		p.cfg.logger.Debug("kpush: SASL session renewed", "addr", addr)
	}
}

// failWaitingTopics fails the records waiting for a topic's first
// metadata when no broker would let kpush in: waiting cannot help.
// Runs on the metadata goroutine.
func (p *Producer) failWaitingTopics(err error) {
	err = authCause(err)
	for name, t := range *p.topics.Load() {
		if isReady(t) {
			continue // its partitions' sinks fail their own records
		}
		p.failTopic(name, t, err)
	}
}

// authCause returns the first authentication failure in err's tree (the
// metadata fetch joins one error per broker tried), so the record's error
// reads "authentication failed: <broker>: <why>".
func authCause(err error) error {
	if !errors.Is(err, wire.ErrAuth) {
		return nil
	}
	for {
		if strings.HasPrefix(err.Error(), wire.ErrAuth.Error()+":") {
			return err
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if c := authCause(e); c != nil {
					return c
				}
			}
			return err
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		default:
			return err
		}
	}
}
