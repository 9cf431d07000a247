package realfaults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpush/kpush/internal/tlsgen"
	"github.com/kpush/kpush/kafkatest"
)

// edgeCluster is a 1-node cluster for the security and request-size tests:
// besides PLAINTEXT (admin, read-back and the request-size test) it has an
// SSL listener with PEM certificates from tlsgen, and a SASL_PLAINTEXT
// listener named SASL offering PLAIN (user alice) and SCRAM-SHA-256/512
// (users created through AlterUserScramCredentials). SASL sessions last
// 3 s (connections.max.reauth.ms), requests are capped at 1 MiB
// (socket.request.max.bytes).
type edgeCluster struct {
	c        *kafkatest.RealCluster
	tls      *tlsgen.Bundle
	dir      string
	sslAddr  string
	saslAddr string
	cl       *kgo.Client
	adm      *kadm.Client
}

const (
	edgeReauth                 = 3 * time.Second
	edgeMaxRequestBytes        = 1 << 20
	plainUser, plainPass       = "alice", "alice-secret"
	scram256User, scram256Pass = "bob", "bob-secret"
	scram512User, scram512Pass = "carol", "carol-secret"
)

var (
	edgeOnce sync.Once
	edgeC    *edgeCluster
	edgeErr  error
)

func sharedEdgeCluster(t *testing.T) *edgeCluster {
	t.Helper()
	kafkatest.SkipUnlessReal(t)
	if kafkatest.Seeds() != nil {
		t.Skip("security tests configure their own listeners; run them without KPUSH_KAFKA_SEEDS: " + ownClusterCommand)
	}
	edgeOnce.Do(func() { edgeC, edgeErr = startEdgeCluster() })
	if edgeErr != nil {
		t.Fatal(edgeErr)
	}
	return edgeC
}

func closeEdgeCluster() {
	if edgeC == nil {
		return
	}
	edgeC.close()
}

func (e *edgeCluster) close() {
	if e.cl != nil {
		e.cl.Close()
	}
	if e.c != nil {
		e.c.Close()
	}
	os.RemoveAll(e.dir)
}

func startEdgeCluster() (*edgeCluster, error) {
	e := &edgeCluster{}
	var err error
	if e.tls, err = tlsgen.New(); err != nil {
		return nil, err
	}
	if e.dir, err = os.MkdirTemp("", "kpush-edge-"); err != nil {
		return nil, err
	}
	files, err := e.tls.WriteFiles(e.dir)
	if err != nil {
		e.close()
		return nil, err
	}
	// A PEM keystore file holds the private key and the certificate chain.
	keystore := filepath.Join(e.dir, "keystore.pem")
	if err := os.WriteFile(keystore, append(append(append([]byte{}, e.tls.ServerKeyPEM...), e.tls.ServerCertPEM...), e.tls.CAPEM...), 0o600); err != nil {
		e.close()
		return nil, err
	}
	sslPort, err := freePort()
	if err != nil {
		e.close()
		return nil, err
	}
	saslPort, err := freePort()
	if err != nil {
		e.close()
		return nil, err
	}
	e.sslAddr = fmt.Sprintf("127.0.0.1:%d", sslPort)
	e.saslAddr = fmt.Sprintf("127.0.0.1:%d", saslPort)
	scram := "org.apache.kafka.common.security.scram.ScramLoginModule required;"
	props := map[string]string{
		"listener.name.ssl.ssl.keystore.type":               "PEM",
		"listener.name.ssl.ssl.keystore.location":           keystore,
		"listener.name.ssl.ssl.truststore.type":             "PEM",
		"listener.name.ssl.ssl.truststore.location":         files.CA,
		"listener.name.sasl.sasl.enabled.mechanisms":        "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
		"listener.name.sasl.plain.sasl.jaas.config":         fmt.Sprintf(`org.apache.kafka.common.security.plain.PlainLoginModule required user_%s="%s";`, plainUser, plainPass),
		"listener.name.sasl.scram-sha-256.sasl.jaas.config": scram,
		"listener.name.sasl.scram-sha-512.sasl.jaas.config": scram,
		"connections.max.reauth.ms":                         fmt.Sprint(edgeReauth.Milliseconds()),
		"socket.request.max.bytes":                          fmt.Sprint(edgeMaxRequestBytes),
	}
	opts := []kafkatest.RealOption{
		kafkatest.WithPropertiesFunc(func(n kafkatest.NodeInfo, p map[string]string) {
			p["listeners"] += fmt.Sprintf(",SSL://%s,SASL://%s", e.sslAddr, e.saslAddr)
			p["advertised.listeners"] += fmt.Sprintf(",SSL://%s,SASL://%s", e.sslAddr, e.saslAddr)
			p["listener.security.protocol.map"] += ",SSL:SSL,SASL:SASL_PLAINTEXT"
			for k, v := range props {
				p[k] = v
			}
		}),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if e.c, err = kafkatest.NewRealCluster(ctx, opts...); err != nil {
		e.close()
		return nil, err
	}
	if e.cl, err = kgo.NewClient(kgo.SeedBrokers(e.c.Addrs()...)); err != nil {
		e.close()
		return nil, err
	}
	e.adm = kadm.NewClient(e.cl)
	resp, err := e.adm.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{
		{User: scram256User, Mechanism: kadm.ScramSha256, Iterations: 4096, Password: scram256Pass},
		{User: scram512User, Mechanism: kadm.ScramSha512, Iterations: 4096, Password: scram512Pass},
	})
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		e.close()
		return nil, fmt.Errorf("create SCRAM users: %w", err)
	}
	return e, nil
}

// clientAddrs are the PLAINTEXT addresses (the request-size test).
func (e *edgeCluster) clientAddrs() []string { return e.c.Addrs() }

func (e *edgeCluster) createTopic(ctx context.Context, name string, parts int32, configs map[string]*string) error {
	resp, err := e.adm.CreateTopic(ctx, parts, -1, configs, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return poll(ctx, func() error {
		md, err := e.adm.Metadata(ctx, name)
		if err != nil {
			return err
		}
		td := md.Topics[name]
		if td.Err != nil || int32(len(td.Partitions)) != parts {
			return fmt.Errorf("topic %s not ready: %v", name, td.Err)
		}
		for _, p := range td.Partitions {
			if p.Leader < 0 {
				return fmt.Errorf("partition %d has no leader", p.Partition)
			}
		}
		return nil
	})
}

func (e *edgeCluster) readAll(ctx context.Context, topic string) ([]kafkatest.Record, error) {
	return e.c.ReadAll(ctx, topic)
}
