package main

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpush/kpush"
)

// startDev runs "kpush dev args" in process. It returns the bootstrap
// addresses, next (the next stdout line, waited for at most 10s) and stop,
// which cancels the command and checks that it returns nil within 15s.
func startDev(t *testing.T, args ...string) (addrs []string, next func() string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runDev(ctx, args, pw, io.Discard)
		pw.Close()
	}()
	lines := make(chan string, 100)
	go func() { // reads stdout until runDev returns
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next = func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				cancel()
				t.Fatalf("kpush dev ended: %v", <-done)
			}
			return l
		case <-time.After(10 * time.Second):
			cancel()
			t.Fatal("kpush dev printed nothing for 10s")
		}
		return ""
	}
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("runDev returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("runDev did not return within 15s of cancel")
		}
	}
	t.Cleanup(stop)
	first := next()
	rest, ok := strings.CutPrefix(first, "bootstrap: ")
	if !ok {
		t.Fatalf("first line %q, want bootstrap: ...", first)
	}
	return strings.Split(rest, ","), next, stop
}

// consume reads n records of topic with a plain franz-go consumer.
func consume(t *testing.T, addrs []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records of %q within 20s", len(recs), n, topic)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s[%d]: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	if len(recs) != n {
		t.Fatalf("consumed %d records, want %d", len(recs), n)
	}
	return recs
}

func TestDev_ServesKafkaClientsUntilCanceled(t *testing.T) {
	addrs, next, stop := startDev(t, "-brokers", "2", "-topic", "orders:4", "-topic", "audit")
	if len(addrs) != 2 || !strings.HasPrefix(addrs[0], "127.0.0.1:") {
		t.Fatalf("bootstrap %q", addrs)
	}
	if l1, l2 := next(), next(); l1 != "topic: orders partitions=4" || l2 != "topic: audit partitions=1" {
		t.Fatalf("topic lines %q, %q", l1, l2)
	}
	p, err := kpush.New(kpush.WithBrokers(addrs...), kpush.WithPartitioner(kpush.ManualPartitioner))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 4 {
		_, err := p.Send(ctx, &kpush.Record{Topic: "orders", Partition: int32(i), Key: []byte{byte('a' + i)}, Value: []byte("v")})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	recs := consume(t, addrs, "orders", 4)
	for _, r := range recs {
		if string(r.Key) != string(rune('a'+r.Partition)) || string(r.Value) != "v" {
			t.Fatalf("partition %d has key %q value %q", r.Partition, r.Key, r.Value)
		}
	}
	stop()
}

func TestDev_DefaultTopicAndFixedPort(t *testing.T) {
	addrs, next, _ := startDev(t)
	if l := next(); len(addrs) != 1 || l != "topic: test partitions=3" {
		t.Fatalf("bootstrap %q, topic line %q", addrs, l)
	}
	// The port is taken now, so -port with it fails with a clear error.
	port := strings.TrimPrefix(addrs[0], "127.0.0.1:")
	code, _, errOut := runCmd(t, "dev", "-port", port)
	if code != 1 || !strings.Contains(errOut, port) {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

func TestDev_AutoCreate(t *testing.T) {
	addrs, _, _ := startDev(t, "-auto-create", "2")
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "fresh", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if r := consume(t, addrs, "fresh", 1); string(r[0].Value) != "x" {
		t.Fatalf("value %q", r[0].Value)
	}
}

func TestDev_UsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"zero brokers", []string{"-brokers", "0"}, "-brokers"},
		{"bad port", []string{"-port", "70000"}, "-port"},
		{"bad partitions", []string{"-topic", "t:x"}, "partitions"},
		{"zero partitions", []string{"-topic", "t:0"}, "partitions"},
		{"bad topic name", []string{"-topic", "a b:1"}, "topic name"},
		{"duplicate topic", []string{"-topic", "a:1", "-topic", "a:2"}, "twice"},
		{"unknown flag", []string{"-nope"}, "nope"},
		{"extra argument", []string{"extra"}, "extra"},
		{"tls host without tls", []string{"--tls-host", "kafka.invalid"}, "--tls-host needs --tls"},
		{"empty tls host", []string{"--tls", "--tls-host", ""}, "empty host name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCmd(t, append([]string{"dev"}, tc.args...)...)
			if code != 2 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, want 2; stderr %q lacks %q", code, errOut, tc.want)
			}
		})
	}
}
