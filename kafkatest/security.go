package kafkatest

// TLS and SASL for the fake cluster.

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kpush/kpush/internal/tlsgen"
)

// SASL mechanisms the fake cluster supports.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

type saslUser struct{ mechanism, user, pass string }

// WithSASL makes the cluster require SASL authentication and adds a user
// with the given mechanism (SASLPlain, SASLScramSHA256 or SASLScramSHA512)
// and password. It can be repeated; CreateTopic and ReadAll authenticate as
// the first user. The broker closes the connection of a client that fails
// to authenticate (as brokers before Kafka 1.0 did) rather than answering
// with an error code. kfake has no OAUTHBEARER.
func WithSASL(mechanism, user, pass string) Option {
	return optionFunc(func(c *config) { c.saslUsers = append(c.saslUsers, saslUser{mechanism, user, pass}) })
}

// WithTLS makes the cluster's listeners speak TLS only, with a server
// certificate for 127.0.0.1, ::1 and localhost signed by a CA made for this
// cluster. Clients trust it through TLSConfig or the files WriteTLSFiles
// writes. With requireClientCert, clients must also present the client
// certificate those give them (mutual TLS).
func WithTLS(requireClientCert bool) Option {
	return optionFunc(func(c *config) { c.tls, c.tlsClientCert = true, requireClientCert })
}

// WithTLSHosts names the hosts (DNS names or IP addresses) the server
// certificate of WithTLS is for, instead of 127.0.0.1, ::1 and localhost:
// a client dialing 127.0.0.1 then sees a certificate for another name, as
// with a broker behind an address its certificate does not list. TLSConfig
// and the cluster's own clients verify the first of them. It needs WithTLS.
func WithTLSHosts(hosts ...string) Option {
	return optionFunc(func(c *config) { c.tlsHosts = append(c.tlsHosts, hosts...) })
}

func (c *config) validateSecurity() error {
	if len(c.tlsHosts) > 0 && !c.tls {
		return fmt.Errorf("kafkatest: WithTLSHosts: needs WithTLS")
	}
	for _, h := range c.tlsHosts {
		if h == "" {
			return fmt.Errorf("kafkatest: WithTLSHosts: empty host name")
		}
	}
	for _, u := range c.saslUsers {
		switch u.mechanism {
		case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		default:
			return fmt.Errorf("kafkatest: WithSASL: unknown mechanism %q (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", u.mechanism)
		}
		if u.user == "" || u.pass == "" {
			return fmt.Errorf("kafkatest: WithSASL: empty user name or password")
		}
	}
	return nil
}

// securityOptions returns the kfake options for SASL and TLS, making the
// certificates when TLS is on.
func (c *config) securityOptions() ([]kfake.Opt, *tlsgen.Bundle, error) {
	var opts []kfake.Opt
	if len(c.saslUsers) > 0 {
		opts = append(opts, kfake.EnableSASL())
		for _, u := range c.saslUsers {
			opts = append(opts, kfake.Superuser(u.mechanism, u.user, u.pass))
		}
	}
	if !c.tls {
		return opts, nil, nil
	}
	b, err := tlsgen.New(c.tlsHosts...)
	if err != nil {
		return nil, nil, fmt.Errorf("kafkatest: WithTLS: %w", err)
	}
	return append(opts, kfake.TLS(b.ServerConfig(c.tlsClientCert))), b, nil
}

// clientOptions are the kgo options CreateTopic and ReadAll need.
func (c *Cluster) clientOptions() []kgo.Opt {
	var opts []kgo.Opt
	if c.certs != nil {
		opts = append(opts, kgo.DialTLSConfig(c.certs.ClientConfig(true)))
	}
	if len(c.cfg.saslUsers) > 0 {
		u := c.cfg.saslUsers[0]
		var m sasl.Mechanism
		switch u.mechanism {
		case SASLPlain:
			m = plain.Auth{User: u.user, Pass: u.pass}.AsMechanism()
		case SASLScramSHA256:
			m = scram.Auth{User: u.user, Pass: u.pass}.AsSha256Mechanism()
		default:
			m = scram.Auth{User: u.user, Pass: u.pass}.AsSha512Mechanism()
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts
}

// TLSConfig returns a client TLS configuration that trusts the cluster's
// CA and presents its client certificate, or nil when the cluster does not
// use TLS (WithTLS).
func (c *Cluster) TLSConfig() *tls.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.certs == nil {
		return nil
	}
	return c.certs.ClientConfig(true)
}

// TLSFiles are the PEM files WriteTLSFiles writes.
type TLSFiles struct {
	CA         string // the CA certificate clients trust (ssl.ca.location)
	ServerCert string // the brokers' certificate and key
	ServerKey  string
	ClientCert string // a client certificate and key, for mutual TLS
	ClientKey  string
}

// WriteTLSFiles writes the cluster's CA, server and client certificates and
// keys as PEM files into dir, for clients configured by file (kcat's
// ssl.ca.location). It fails when the cluster does not use TLS.
func (c *Cluster) WriteTLSFiles(dir string) (TLSFiles, error) {
	c.mu.Lock()
	b := c.certs
	c.mu.Unlock()
	if b == nil {
		return TLSFiles{}, fmt.Errorf("kafkatest: WriteTLSFiles: the cluster does not use TLS")
	}
	f, err := b.WriteFiles(dir)
	if err != nil {
		return TLSFiles{}, fmt.Errorf("kafkatest: WriteTLSFiles: %w", err)
	}
	return TLSFiles{CA: f.CA, ServerCert: f.ServerCert, ServerKey: f.ServerKey, ClientCert: f.ClientCert, ClientKey: f.ClientKey}, nil
}

// advertiseSASLHandshakeV0 makes the cluster's ApiVersions answer list
// SaslHandshake from version 0, as Kafka 1.0 to 3.x brokers do. kfake
// serves only v1 (the version every client sends with SaslAuthenticate),
// but librdkafka before 2.10 (kcat) enables SASL only when the advertised
// range includes v0, and would otherwise refuse to authenticate. The
// answer is kfake's own, captured once with a plain client and replayed
// with that one range widened.
func (c *Cluster) advertiseSASLHandshakeV0(fake *kfake.Cluster, addrs []string) error {
	cl, err := kgo.NewClient(append(c.clientOptions(), kgo.SeedBrokers(addrs...))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	captured, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("kafkatest: WithSASL: ApiVersions: %w", err)
	}
	for i := range captured.ApiKeys {
		if captured.ApiKeys[i].ApiKey == int16(kmsg.SASLHandshake) {
			captured.ApiKeys[i].MinVersion = 0
		}
	}
	fake.ControlKey(int16(kmsg.ApiVersions), func(r kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		if r.GetVersion() > captured.Version {
			return nil, nil, false // kfake answers UNSUPPORTED_VERSION itself
		}
		resp := r.ResponseKind().(*kmsg.ApiVersionsResponse)
		resp.ApiKeys = slices.Clone(captured.ApiKeys)
		resp.SupportedFeatures = captured.SupportedFeatures
		resp.FinalizedFeaturesEpoch = captured.FinalizedFeaturesEpoch
		resp.FinalizedFeatures = captured.FinalizedFeatures
		return resp, nil, true
	})
	return nil
}
