package kafkatest

import (
	"os"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
)

func TestWithSASLAndTLS_ClientsAuthenticate(t *testing.T) {
	c := NewTestCluster(t, WithTopic("sec", 2), WithTLS(true),
		WithSASL(SASLScramSHA512, "alice", "secret"), WithSASL(SASLPlain, "bob", "other"))
	ctx := t.Context()
	if err := c.CreateTopic(ctx, "more", 1); err != nil {
		t.Fatalf("CreateTopic over TLS + SASL: %v", err)
	}
	cl := newTestClient(t, c, kgo.DialTLSConfig(c.TLSConfig()), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.SASL(plain.Auth{User: "bob", Pass: "other"}.AsMechanism()))
	want := produce(t, cl, "sec", 2, 10)
	got, err := c.ReadAll(ctx, "sec")
	if err != nil {
		t.Fatalf("ReadAll over TLS + SASL: %v", err)
	}
	checkRecords(t, got, want)
	f, err := c.WriteTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{f.CA, f.ServerCert, f.ServerKey, f.ClientCert, f.ClientKey} {
		if _, err := os.Stat(path); err != nil {
			t.Error(err)
		}
	}
}

func TestWithSASL_InvalidAndPlainCluster(t *testing.T) {
	if _, err := NewCluster(WithSASL("GSSAPI", "u", "p")); err == nil {
		t.Error("NewCluster accepted an unknown SASL mechanism")
	}
	c := NewTestCluster(t)
	if c.TLSConfig() != nil {
		t.Error("TLSConfig of a plaintext cluster is not nil")
	}
	if _, err := c.WriteTLSFiles(t.TempDir()); err == nil {
		t.Error("WriteTLSFiles of a plaintext cluster succeeded")
	}
}
