package kpush_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// ExampleWithSASL connects with SASL/SCRAM-SHA-512 over TLS
// (security.protocol=SASL_SSL), as most managed Kafka services expect. For
// such a service, WithTLS(nil) trusts the system's roots; here the fake
// cluster has its own CA.
func ExampleWithSASL() {
	c, err := kafkatest.NewCluster(kafkatest.WithTopic("events", 3), kafkatest.WithTLS(false),
		kafkatest.WithSASL(kafkatest.SASLScramSHA512, "app", "app-secret"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	p, err := kpush.New(
		kpush.WithBrokers(c.Addrs()...),
		kpush.WithTLS(c.TLSConfig()),
		kpush.WithSASL(kpush.SASLScramSHA512("app", "app-secret")), // e.g. os.Getenv("KAFKA_PASSWORD")
	)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(context.Background())
	res, err := p.Send(context.Background(), &kpush.Record{Topic: "events", Value: []byte("hello")})
	fmt.Println(res.Topic, err)
	// Output: events <nil>
}

// ExampleWithSASL_wrongPassword shows what a rejected password looks like:
// Send fails at once, the record was not written, and the error says why
// without showing the password.
func ExampleWithSASL_wrongPassword() {
	c, err := kafkatest.NewCluster(kafkatest.WithTopic("events", 1),
		kafkatest.WithSASL(kafkatest.SASLScramSHA256, "app", "app-secret"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...), kpush.WithSASL(kpush.SASLScramSHA256("app", "typo")))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(context.Background())
	_, err = p.Send(context.Background(), &kpush.Record{Topic: "events", Value: []byte("hello")})
	fmt.Println(errors.Is(err, kpush.ErrAuthentication), errors.Is(err, kpush.ErrNotWritten))
	fmt.Println(p.Stats().AuthFailures > 0)
	// Output:
	// true true
	// true
}

// ExampleSASLOAuthBearer plugs a token provider (a cloud IAM or OIDC
// client) into OAUTHBEARER. kpush calls it for every new connection and
// every re-authentication; it caches the token until shortly before it
// expires.
func ExampleSASLOAuthBearer() {
	var (
		mu      sync.Mutex
		token   string
		expires time.Time
	)
	fetch := func(ctx context.Context) (string, time.Time, error) {
		// Call the identity provider here, bounded by ctx.
		return "eyJhbGciOi...", time.Now().Add(time.Hour), nil
	}
	provider := func(ctx context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if time.Until(expires) < 5*time.Minute {
			t, exp, err := fetch(ctx)
			if err != nil {
				return "", err // fails the connection with ErrAuthentication
			}
			token, expires = t, exp
		}
		return token, nil
	}
	p, err := kpush.New(
		kpush.WithBrokers("broker-1.example.com:9093"),
		kpush.WithTLS(nil), // system roots
		kpush.WithSASL(kpush.SASLOAuthBearer(provider)),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(context.Background()) // New does not connect; nothing is sent here
	fmt.Println("ready")
	// Output: ready
}

// ExampleTLSConfigFromFiles connects with mutual TLS configured from PEM
// files (Java ssl.truststore / ssl.keystore, librdkafka ssl.*.location).
func ExampleTLSConfigFromFiles() {
	c, err := kafkatest.NewCluster(kafkatest.WithTopic("events", 1), kafkatest.WithTLS(true))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	dir, err := os.MkdirTemp("", "kpush-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	files, err := c.WriteTLSFiles(dir)
	if err != nil {
		log.Fatal(err)
	}

	tlsCfg, err := kpush.TLSConfigFromFiles(files.CA, files.ClientCert, files.ClientKey)
	if err != nil {
		log.Fatal(err)
	}
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...), kpush.WithTLS(tlsCfg))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(context.Background())
	_, err = p.Send(context.Background(), &kpush.Record{Topic: "events", Value: []byte("hello")})
	fmt.Println(err)
	// Output: <nil>
}
