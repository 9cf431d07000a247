package main

// Goroutines and ownership (configuration): none; parseConfig runs on the
// caller's thread inside kp_new and builds the options for kpush.New.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kpush/kpush"
)

// tlsSettings is the "tls" object of the configuration.
type tlsSettings struct {
	CADER              [][]byte `json:"ca_der"`
	CAFile             string   `json:"ca_file"`
	CertFile           string   `json:"cert_file"`
	KeyFile            string   `json:"key_file"`
	InsecureSkipVerify bool     `json:"insecure_skip_verify"`
	SkipHostnameCheck  bool     `json:"skip_hostname_check"` // verify the chain, not the name (check_hostname=False)
	ServerName         string   `json:"server_name"`
}

// saslSettings is the "sasl" object of the configuration.
type saslSettings struct {
	Mechanism string `json:"mechanism"`
	Username  string `json:"username"`
	Password  string `json:"password"`
}

// settings is the JSON configuration Python passes to kp_new. Optional
// fields are pointers: nil keeps kpush's default.
type settings struct {
	Brokers            []string      `json:"brokers"`
	ClientID           *string       `json:"client_id"`
	Acks               *int          `json:"acks"`
	Compression        *string       `json:"compression"`
	LingerMS           *float64      `json:"linger_ms"`
	MaxBatchBytes      *int          `json:"max_batch_bytes"`
	Idempotence        *bool         `json:"idempotence"`
	RequestTimeoutMS   *float64      `json:"request_timeout_ms"`
	RetryBackoffMS     *float64      `json:"retry_backoff_ms"`
	MetadataMaxAgeMS   *float64      `json:"metadata_max_age_ms"`
	DeliveryTimeoutMS  *float64      `json:"delivery_timeout_ms"`
	DialTimeoutMS      *float64      `json:"dial_timeout_ms"`
	MaxBufferedBytes   *int64        `json:"max_buffered_bytes"`
	MaxBufferedRecords *int64        `json:"max_buffered_records"`
	MaxInflight        *int          `json:"max_inflight"`
	FailFast           *bool         `json:"fail_fast"`
	Partitioner        *string       `json:"partitioner"`
	DefaultTopic       *string       `json:"default_topic"`
	TLS                *tlsSettings  `json:"tls"`
	SASL               *saslSettings `json:"sasl"`
}

// errConfig is the bridge's own configuration error (bad JSON, bad TLS
// files); kpush's *ConfigError covers the options themselves.
var errConfig = errors.New("kpush: invalid configuration")

func ms(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

// parseConfig turns the JSON settings into kpush options. token, if not
// nil, supplies OAUTHBEARER tokens.
func parseConfig(raw []byte, token func(context.Context) (string, error)) (*settings, []kpush.Option, *tls.Config, kpush.SASLMechanism, error) {
	var s settings
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("%w: %v", errConfig, err)
	}
	opts := []kpush.Option{kpush.WithBrokers(s.Brokers...)}
	add := func(o kpush.Option) { opts = append(opts, o) }
	if stageOn {
		add(kpush.WithHooks(stageHook{}))
	}
	if s.ClientID != nil {
		add(kpush.WithClientID(*s.ClientID))
	}
	if s.Acks != nil {
		add(kpush.WithAcks(kpush.Acks(*s.Acks)))
	}
	if s.Compression != nil {
		c, err := kpush.ParseCompression(*s.Compression)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		add(kpush.WithCompression(c))
	}
	if s.LingerMS != nil {
		add(kpush.WithLinger(ms(*s.LingerMS)))
	}
	if s.MaxBatchBytes != nil {
		add(kpush.WithMaxBatchBytes(*s.MaxBatchBytes))
	}
	if s.Idempotence != nil {
		add(kpush.WithIdempotence(*s.Idempotence))
	}
	if s.RequestTimeoutMS != nil {
		add(kpush.WithRequestTimeout(ms(*s.RequestTimeoutMS)))
	}
	if s.RetryBackoffMS != nil {
		add(kpush.WithRetryBackoff(ms(*s.RetryBackoffMS)))
	}
	if s.MetadataMaxAgeMS != nil {
		add(kpush.WithMetadataMaxAge(ms(*s.MetadataMaxAgeMS)))
	}
	if s.DeliveryTimeoutMS != nil {
		add(kpush.WithDeliveryTimeout(ms(*s.DeliveryTimeoutMS)))
	}
	if s.DialTimeoutMS != nil {
		add(kpush.WithDialTimeout(ms(*s.DialTimeoutMS)))
	}
	if s.MaxBufferedBytes != nil {
		add(kpush.WithMaxBufferedBytes(*s.MaxBufferedBytes))
	}
	if s.MaxBufferedRecords != nil {
		add(kpush.WithMaxBufferedRecords(*s.MaxBufferedRecords))
	}
	if s.MaxInflight != nil {
		add(kpush.WithMaxInflight(*s.MaxInflight))
	}
	if s.FailFast != nil {
		add(kpush.WithFailFastWhenFull(*s.FailFast))
	}
	if s.DefaultTopic != nil {
		add(kpush.WithDefaultTopic(*s.DefaultTopic))
	}
	if s.Partitioner != nil {
		p, ok := map[string]kpush.Partitioner{
			"sticky": kpush.StickyPartitioner, "murmur2": kpush.StickyPartitioner,
			"crc32": kpush.CRC32Partitioner, "round_robin": kpush.RoundRobinPartitioner,
		}[*s.Partitioner]
		if !ok {
			return nil, nil, nil, nil, fmt.Errorf("%w: partitioner %q is not sticky, murmur2, crc32 or round_robin", errConfig, *s.Partitioner)
		}
		add(kpush.WithPartitioner(p))
	}
	var tcfg *tls.Config
	if t := s.TLS; t != nil {
		var err error
		tcfg, err = kpush.TLSConfigFromFiles(t.CAFile, t.CertFile, t.KeyFile)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("%w: %v", errConfig, err)
		}
		if len(t.CADER) > 0 {
			if tcfg.RootCAs == nil {
				tcfg.RootCAs = x509.NewCertPool()
			}
			for _, der := range t.CADER {
				cert, err := x509.ParseCertificate(der)
				if err != nil {
					return nil, nil, nil, nil, fmt.Errorf("%w: ssl_context CA certificate: %v", errConfig, err)
				}
				tcfg.RootCAs.AddCert(cert)
			}
		}
		tcfg.InsecureSkipVerify = t.InsecureSkipVerify
		tcfg.ServerName = t.ServerName
		if t.SkipHostnameCheck && !t.InsecureSkipVerify {
			// crypto/tls verifies the chain and the name together, or
			// neither: turn its check off and verify the chain here, as
			// Python's ssl does with check_hostname=False.
			tcfg.InsecureSkipVerify = true
			tcfg.VerifyConnection = verifyChain(tcfg.RootCAs)
		}
		add(kpush.WithTLS(tcfg))
	}
	var mech kpush.SASLMechanism
	if a := s.SASL; a != nil {
		switch a.Mechanism {
		case "PLAIN":
			mech = kpush.SASLPlain(a.Username, a.Password)
		case "SCRAM-SHA-256":
			mech = kpush.SASLScramSHA256(a.Username, a.Password)
		case "SCRAM-SHA-512":
			mech = kpush.SASLScramSHA512(a.Username, a.Password)
		case "OAUTHBEARER":
			if token == nil {
				return nil, nil, nil, nil, fmt.Errorf("%w: OAUTHBEARER needs a token provider", errConfig)
			}
			mech = kpush.SASLOAuthBearer(token)
		default:
			return nil, nil, nil, nil, fmt.Errorf("%w: sasl mechanism %q is not PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER", errConfig, a.Mechanism)
		}
		add(kpush.WithSASL(mech))
	}
	return &s, opts, tcfg, mech, nil
}

// verifyChain verifies a server's certificate chain against roots (the
// system's when nil), for any host name: the check crypto/tls makes with
// InsecureSkipVerify off, less the name.
func verifyChain(roots *x509.CertPool) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("kpush: the broker presented no certificate")
		}
		opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(opts)
		return err
	}
}
