package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Tests that check goroutines process-wide do not run in parallel.

// clusterAndClient selects the goroutines of the fake cluster and of
// franz-go clients: none may survive a test's Close calls.
var clusterAndClient = GoroutineFilter{Packages: []string{"github.com/twmb/franz-go", "github.com/kpush/kpush/kafkatest"}}

// waitNoClusterGoroutines fails the test if goroutines of the cluster or of
// a franz-go client are still running 5s from now, listing their stacks.
func waitNoClusterGoroutines(t *testing.T) {
	t.Helper()
	if err := clusterAndClient.Wait(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func newTestClient(t *testing.T, c *Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Addrs()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// topicPartitions returns the partition count of topic, or the topic error.
func topicPartitions(ctx context.Context, cl *kgo.Client, topic string, autoCreate bool) (int, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	req.AllowAutoTopicCreation = autoCreate
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, err
	}
	if err := kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil {
		return 0, err
	}
	return len(resp.Topics[0].Partitions), nil
}

func TestNewCluster_CloseLeavesNoGoroutines(t *testing.T) {
	c, err := NewCluster(WithTopic("t", 2))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: "t", Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	if _, err := c.ReadAll(t.Context(), "t"); err != nil {
		t.Fatal(err)
	}
	// A connection left open gives kfake per-connection goroutines that
	// Close must stop.
	conn, err := net.Dial("tcp", c.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if n, _ := labelledGoroutines(c.label); n == 0 {
		t.Fatal("no labelled goroutines while running; Close would not wait for anything")
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if n, stacks := labelledGoroutines(c.label); n != 0 {
		t.Fatalf("%d cluster goroutines after Close:\n%s", n, stacks)
	}
	conn.Close()
	waitNoClusterGoroutines(t)
}

func TestNewCluster_FailedStartLeavesNoGoroutines(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().(*net.TCPAddr).Port

	c := NewUnstartedCluster(WithPorts(0, busy))
	if err := c.Start(); err == nil {
		c.Close()
		t.Fatal("Start on a busy port: got nil error")
	}
	if n, stacks := labelledGoroutines(c.label); n != 0 {
		t.Fatalf("%d cluster goroutines after failed Start:\n%s", n, stacks)
	}
	waitNoClusterGoroutines(t)
	if err := c.Start(); !errors.Is(err, errAlreadyStarted) {
		t.Fatalf("second Start: got %v, want %v", err, errAlreadyStarted)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close after failed Start: %v", err)
	}
}

func TestNewCluster_InvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
		want string
	}{
		{"zero brokers", []Option{WithBrokers(0)}, "WithBrokers"},
		{"ports and brokers disagree", []Option{WithBrokers(2), WithPorts(0)}, "WithPorts"},
		{"port out of range", []Option{WithPorts(70000)}, "WithPorts"},
		{"empty topic name", []Option{WithTopic("", 1)}, "WithTopic"},
		{"topic without partitions", []Option{WithTopic("t", 0)}, "WithTopic"},
		{"auto create without partitions", []Option{WithAutoCreateTopics(0)}, "WithAutoCreateTopics"},
		{"tls hosts without tls", []Option{WithTLSHosts("kafka.invalid")}, "WithTLSHosts"},
		{"empty tls host", []Option{WithTLS(false), WithTLSHosts("")}, "WithTLSHosts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewCluster(tt.opts...)
			if err == nil {
				c.Close()
				t.Fatal("got nil error")
			}
			if !strings.HasPrefix(err.Error(), "kafkatest: "+tt.want+":") {
				t.Fatalf("error %q does not name option %s", err, tt.want)
			}
		})
	}
}

func TestStart_AfterStartOrClose(t *testing.T) {
	c := NewUnstartedCluster()
	if got := c.Addrs(); got != nil {
		t.Fatalf("Addrs before Start = %v, want nil", got)
	}
	if c.Fake() != nil {
		t.Fatal("Fake before Start is not nil")
	}
	if err := c.CreateTopic(t.Context(), "t", 1); !errors.Is(err, errNotStarted) {
		t.Fatalf("CreateTopic before Start: got %v, want %v", err, errNotStarted)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); !errors.Is(err, errAlreadyStarted) {
		t.Fatalf("second Start: got %v, want %v", err, errAlreadyStarted)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); !errors.Is(err, errClosed) {
		t.Fatalf("Start after Close: got %v, want %v", err, errClosed)
	}

	unstarted := NewUnstartedCluster()
	if err := unstarted.Close(); err != nil {
		t.Fatal(err)
	}
	if err := unstarted.Start(); !errors.Is(err, errClosed) {
		t.Fatalf("Start after Close of unstarted cluster: got %v, want %v", err, errClosed)
	}
}

func TestClose_Idempotent(t *testing.T) {
	c, err := NewCluster()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = c.Close() })
	}
	wg.Wait()
	errs = append(errs, c.Close())
	for i, err := range errs {
		if err != nil {
			t.Errorf("Close #%d: %v", i, err)
		}
	}
	if _, err := c.ReadAll(t.Context(), "t"); !errors.Is(err, errClosed) {
		t.Fatalf("ReadAll after Close: got %v, want %v", err, errClosed)
	}
}

func TestClose_ReportsStuckGoroutines(t *testing.T) {
	c := NewUnstartedCluster()
	c.cfg.closeTimeout = 50 * time.Millisecond
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	entered := make(chan struct{})
	c.Fake().ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
		close(entered)
		<-release
		return nil, nil, false
	})
	cl := newTestClient(t, c)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go topicPartitions(ctx, cl, "t", false) //nolint:errcheck // only needs to reach the control function
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("control function not reached")
	}

	err := c.Close()
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("Close with a blocked control function: got %v, want a stuck-goroutine error", err)
	}
	if err2 := c.Close(); err2 != err {
		t.Fatalf("second Close: got %v, want the first result", err2)
	}
	close(release)
	if err := waitGoroutines(c.label, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestNewTestCluster_ClosesOnCleanup(t *testing.T) {
	var c *Cluster
	t.Run("inner", func(t *testing.T) {
		c = NewTestCluster(t, WithTopic("t", 1))
		if len(c.Addrs()) != 1 {
			t.Fatalf("Addrs = %v, want one address", c.Addrs())
		}
	})
	if _, err := c.ReadAll(t.Context(), "t"); !errors.Is(err, errClosed) {
		t.Fatalf("ReadAll after the test ended: got %v, want %v", err, errClosed)
	}
	if n, stacks := labelledGoroutines(c.label); n != 0 {
		t.Fatalf("%d cluster goroutines after cleanup:\n%s", n, stacks)
	}
	conn, err := net.DialTimeout("tcp", c.Addrs()[0], time.Second)
	if err == nil {
		conn.Close()
		t.Fatal("broker still accepts connections after cleanup")
	}
}

func TestWithTopic_SeedsTopics(t *testing.T) {
	c := NewTestCluster(t, WithTopic("a", 1), WithTopic("b", 4), WithTopic("a", 3))
	cl := newTestClient(t, c)
	for topic, want := range map[string]int{"a": 3, "b": 4} {
		got, err := topicPartitions(t.Context(), cl, topic, false)
		if err != nil {
			t.Fatalf("topic %q: %v", topic, err)
		}
		if got != want {
			t.Errorf("topic %q has %d partitions, want %d", topic, got, want)
		}
	}
	if _, err := topicPartitions(t.Context(), cl, "missing", true); !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("unseeded topic without auto-create: got %v, want %v", err, kerr.UnknownTopicOrPartition)
	}
}

func TestWithAutoCreateTopics_CreatesOnMetadata(t *testing.T) {
	c := NewTestCluster(t, WithAutoCreateTopics(5))
	cl := newTestClient(t, c)
	if _, err := topicPartitions(t.Context(), cl, "auto", false); !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("metadata without auto-create flag: got %v, want %v", err, kerr.UnknownTopicOrPartition)
	}
	got, err := topicPartitions(t.Context(), cl, "auto", true)
	if err != nil {
		t.Fatal(err)
	}
	if got != 5 {
		t.Fatalf("auto-created topic has %d partitions, want 5", got)
	}
}

func TestCreateTopic_CreatesAndRejectsDuplicate(t *testing.T) {
	c := NewTestCluster(t, WithTopic("seeded", 1))
	ctx := t.Context()
	if err := c.CreateTopic(ctx, "new", 3); err != nil {
		t.Fatal(err)
	}
	got, err := topicPartitions(ctx, newTestClient(t, c), "new", false)
	if err != nil {
		t.Fatal(err)
	}
	if got != 3 {
		t.Fatalf("created topic has %d partitions, want 3", got)
	}
	for _, topic := range []string{"new", "seeded"} {
		err := c.CreateTopic(ctx, topic, 1)
		if !errors.Is(err, kerr.TopicAlreadyExists) {
			t.Fatalf("CreateTopic(%q) again: got %v, want %v", topic, err, kerr.TopicAlreadyExists)
		}
	}
	if err := c.CreateTopic(ctx, "zero", 0); err == nil {
		t.Fatal("CreateTopic with 0 partitions: got nil error")
	}
}

// produce writes n records to each of partitions with a manual partitioner
// and returns what it wrote, ordered by partition then offset.
func produce(t *testing.T, cl *kgo.Client, topic string, partitions int32, n int) []*kgo.Record {
	t.Helper()
	ts := time.UnixMilli(time.Now().UnixMilli())
	var recs []*kgo.Record
	for p := range partitions {
		for i := range n {
			recs = append(recs, &kgo.Record{
				Topic:     topic,
				Partition: p,
				Key:       fmt.Appendf(nil, "k%d-%d", p, i),
				Value:     fmt.Appendf(nil, "v%d-%d", p, i),
				Headers:   []kgo.RecordHeader{{Key: "h", Value: []byte{byte(i)}}},
				Timestamp: ts.Add(time.Duration(i) * time.Millisecond),
			})
		}
	}
	if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return recs
}

func checkRecords(t *testing.T, got []Record, want []*kgo.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Topic != w.Topic || g.Partition != w.Partition || g.Offset != w.Offset ||
			string(g.Key) != string(w.Key) || string(g.Value) != string(w.Value) ||
			!g.Timestamp.Equal(w.Timestamp) || g.ProducerID != w.ProducerID || g.ProducerEpoch != w.ProducerEpoch {
			t.Fatalf("record %d = %+v, want %+v", i, g, *w)
		}
		if len(g.Headers) != 1 || g.Headers[0].Key != "h" || string(g.Headers[0].Value) != string(w.Headers[0].Value) {
			t.Fatalf("record %d headers = %+v, want %+v", i, g.Headers, w.Headers)
		}
	}
}

func TestReadAll_ReturnsProducedRecordsInOrder(t *testing.T) {
	c := NewTestCluster(t, WithTopic("t", 3))
	cl := newTestClient(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	want := produce(t, cl, "t", 3, 4)

	got, err := c.ReadAll(t.Context(), "t")
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, got, want)
	if got[0].ProducerID < 0 {
		t.Errorf("ProducerID = %d, want an idempotent producer's ID", got[0].ProducerID)
	}
	if !slices.IsSortedFunc(got, func(a, b Record) int {
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	}) {
		t.Fatal("records not ordered by partition, then offset")
	}
}

func TestReadAll_EmptyAndUnknownTopic(t *testing.T) {
	c := NewTestCluster(t, WithTopic("empty", 2))
	got, err := c.ReadAll(t.Context(), "empty")
	if err != nil || len(got) != 0 {
		t.Fatalf("ReadAll(empty) = %v, %v; want no records and no error", got, err)
	}
	if _, err := c.ReadAll(t.Context(), "missing"); !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("ReadAll(missing): got %v, want %v", err, kerr.UnknownTopicOrPartition)
	}
}

func TestReadAll_RespectsContext(t *testing.T) {
	c := NewTestCluster(t, WithTopic("t", 1))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.ReadAll(ctx, "t"); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadAll with canceled ctx: got %v, want %v", err, context.Canceled)
	}
}

func TestMultipleBrokers_ServeEveryPartition(t *testing.T) {
	const brokers, partitions = 3, 6
	c := NewTestCluster(t, WithBrokers(brokers), WithTopic("t", partitions))
	addrs := c.Addrs()
	if len(addrs) != brokers {
		t.Fatalf("Addrs = %v, want %d addresses", addrs, brokers)
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil || host != "127.0.0.1" {
			t.Fatalf("address %q is not on 127.0.0.1", a)
		}
		if seen[a] {
			t.Fatalf("duplicate address %q", a)
		}
		seen[a] = true
	}

	// Move partition 0 so that leadership certainly spans two brokers.
	if err := c.Fake().MoveTopicPartition("t", 0, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.Fake().MoveTopicPartition("t", 1, 2); err != nil {
		t.Fatal(err)
	}
	cl := newTestClient(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	want := produce(t, cl, "t", partitions, 3)
	got, err := c.ReadAll(t.Context(), "t")
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, got, want)
}

func TestWithPorts_ListensOnGivenPorts(t *testing.T) {
	// Find two free ports; the window in which another process could take
	// one is small, and a clash fails loudly rather than passing.
	var ports []int
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
	}
	c := NewTestCluster(t, WithPorts(ports...))
	want := []string{fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])}
	if got := c.Addrs(); !slices.Equal(got, want) {
		t.Fatalf("Addrs = %v, want %v", got, want)
	}
}

func TestReadAll_StopsAfterTransactionMarker(t *testing.T) {
	c := NewTestCluster(t, WithTopic("t", 1))
	cl := newTestClient(t, c, kgo.TransactionalID("tx"))
	ctx := t.Context()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("a")}, &kgo.Record{Topic: "t", Value: []byte("b")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	// The log ends with the commit marker, which ReadAll skips.
	got, err := c.ReadAll(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got[0].Value) != "a" || string(got[1].Value) != "b" {
		t.Fatalf("ReadAll = %+v, want records a and b", got)
	}
}

func TestReadAll_WhileProducing(t *testing.T) {
	c := NewTestCluster(t, WithTopic("t", 1))
	cl := newTestClient(t, c)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("first")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		for ctx.Err() == nil {
			cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("more")})
		}
	})
	got, err := c.ReadAll(t.Context(), "t")
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range got {
		if r.Offset != int64(i) {
			t.Fatalf("record %d has offset %d; want a gapless prefix of the log", i, r.Offset)
		}
	}
	if len(got) == 0 {
		t.Fatal("ReadAll returned nothing, want at least the first record")
	}
}
