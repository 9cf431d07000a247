package kpush_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// countingHandler counts log records whose message contains a substring.
type countingHandler struct {
	mu     sync.Mutex
	counts map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.counts[r.Message]++
	h.mu.Unlock()
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
func (h *countingHandler) count(sub string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for m, c := range h.counts {
		if strings.Contains(m, sub) {
			n += c
		}
	}
	return n
}

// requestCounter counts the requests of each key the fake cluster
// receives (every broker), without changing how they are answered.
type requestCounter struct {
	n [int(kmsg.DescribeTopicPartitions) + 1]atomic.Int64
}

func countRequests(c *kafkatest.Cluster, keys ...kmsg.Key) *requestCounter {
	rc := new(requestCounter)
	f := c.Fake()
	for _, k := range keys {
		f.ControlKey(int16(k), func(kmsg.Request) (kmsg.Response, error, bool) {
			f.KeepControl()
			rc.n[k].Add(1)
			return nil, nil, false
		})
	}
	return rc
}

func (rc *requestCounter) get(k kmsg.Key) int64 { return rc.n[k].Load() }

// window waits d (a bounded observation window, not synchronization) and
// returns how many k requests and log lines matching sub arrived in it.
func window(d time.Duration, rc *requestCounter, k kmsg.Key, h *countingHandler, sub string) (reqs int64, logs int) {
	r0, l0 := rc.get(k), h.count(sub)
	<-time.After(d)
	return rc.get(k) - r0, h.count(sub) - l0
}

// TestStorm_RemovedBroker: a broker leaves the cluster while it leads
// partitions with records queued. After the leaders moved, nothing may
// dial the removed broker again (its sink is removed), and the idle
// producer may send only periodic metadata.
func TestStorm_RemovedBroker(t *testing.T) {
	const topic = "storm"
	rn := newRelNet()
	c := kafkatest.NewTestCluster(t, kafkatest.WithBrokers(3), kafkatest.WithTopic(topic, 6), kafkatest.WithKfakeOptions(kfake.ListenFn(rn.listen)))
	_, port, _ := net.SplitHostPort(c.Addrs()[2])
	port2, _ := strconv.Atoi(port)
	h := &countingHandler{counts: map[string]int{}}
	p := newProducer(t, c, kpush.WithLogger(slog.New(h)), kpush.WithRetryBackoff(10*time.Millisecond))
	ctx := testCtx(t)
	rc := countRequests(c, kmsg.Metadata, kmsg.Produce)
	sendKeyed(t, ctx, p, topic, 12, 3)
	if err := c.Fake().RemoveNode(2); err != nil {
		t.Fatal(err)
	}
	rn.kill(port2)
	sendKeyed(t, ctx, p, topic, 12, 3)
	// Let the retries and the leader moves settle (no assertion), then
	// watch the idle producer.
	meta, dials := window(2*time.Second, rc, kmsg.Metadata, h, "connection failed")
	t.Logf("settling 2s after the removal: %d metadata requests, %d failed dials", meta, dials)
	prod0 := rc.get(kmsg.Produce)
	meta, dials = window(3*time.Second, rc, kmsg.Metadata, h, "connection failed")
	prod := rc.get(kmsg.Produce) - prod0
	t.Logf("idle 3s: %d metadata, %d produce requests, %d failed dials", meta, prod, dials)
	// The leaders moved and the removed broker's sink is gone: nothing may
	// dial it, and an idle producer sends nothing but its periodic
	// metadata (every 5 min by default, none in this window).
	if dials != 0 || meta != 0 || prod != 0 {
		t.Fatalf("idle producer after a broker left: %d failed dials, %d metadata and %d produce requests in 3s; want none", dials, meta, prod)
	}
}

// metadataRewriter returns a relNet hook that applies fn to every
// Metadata response the cluster sends.
func metadataRewriter(fn func(*kmsg.MetadataResponse)) func(c *relConn, key, version int16, frame []byte) ([]byte, bool) {
	return func(_ *relConn, key, version int16, frame []byte) ([]byte, bool) {
		if key != int16(kmsg.Metadata) {
			return nil, false
		}
		return rewriteResponse(key, version, frame, func(r kmsg.Response) { fn(r.(*kmsg.MetadataResponse)) }), false
	}
}

// metadataCap is the most triggered metadata requests a producer may send
// in a window of d with the default backoff (100ms doubling to 1s, ±20%
// jitter; see meta.Refresher): the waits before the first refreshes of a
// run sum to at least 80+160+320+640ms, and every later one is at least
// 800ms. One more for a refresh already under way when the window opens.
func metadataCap(d time.Duration) int64 {
	n := int64(1)
	for _, w := range []time.Duration{80, 160, 320, 640} {
		n++
		d -= w * time.Millisecond
		if d <= 0 {
			return n
		}
	}
	return n + int64(d/(800*time.Millisecond)) + 1
}

// TestStorm_LeaderlessPartition: a partition with no leader (and a
// record waiting for one) makes metadata refresh with exponential backoff
// to a cap, not ten times a second; once the record has its outcome (the
// delivery timeout), the idle producer stops asking.
func TestStorm_LeaderlessPartition(t *testing.T) {
	const topic = "leaderless"
	rn := newRelNet()
	rn.hook = metadataRewriter(func(r *kmsg.MetadataResponse) {
		for i := range r.Topics {
			for j := range r.Topics[i].Partitions {
				if pp := &r.Topics[i].Partitions[j]; pp.Partition == 0 {
					pp.Leader, pp.ErrorCode = -1, kerr.LeaderNotAvailable.Code
				}
			}
		}
	})
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic(topic, 2), kafkatest.WithKfakeOptions(kfake.ListenFn(rn.listen)))
	rc := countRequests(c, kmsg.Metadata)
	h := &countingHandler{counts: map[string]int{}}
	p := newProducer(t, c, kpush.WithPartitioner(kpush.ManualPartitioner), kpush.WithLogger(slog.New(h)),
		kpush.WithDeliveryTimeout(4*time.Second), kpush.WithRequestTimeout(time.Second))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: topic, Partition: 1, Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	p.SendAsync(ctx, &kpush.Record{Topic: topic, Partition: 0, Value: []byte("waits")}, func(_ kpush.Result, err error) { done <- err })
	const w = 3 * time.Second
	meta, _ := window(w, rc, kmsg.Metadata, h, "")
	t.Logf("%d metadata requests in %v while a record waits for a leader (cap %d)", meta, w, metadataCap(w))
	if meta > metadataCap(w) {
		t.Errorf("%d metadata requests in %v; the backoff schedule allows %d", meta, w, metadataCap(w))
	}
	select {
	case err := <-done:
		if !errors.Is(err, kpush.ErrDeliveryTimeout) {
			t.Fatalf("waiting record: %v, want ErrDeliveryTimeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no outcome for the waiting record")
	}
	meta, _ = window(2*time.Second, rc, kmsg.Metadata, h, "")
	if meta > 1 {
		t.Errorf("%d metadata requests in 2s once nothing waits; want at most 1 (a refresh already due)", meta)
	}
}

// deleteTopic deletes topic through the cluster's admin API.
func deleteTopic(t *testing.T, ctx context.Context, c *kafkatest.Cluster, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDeleteTopicsRequest()
	rt := kmsg.NewDeleteTopicsRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	req.TopicNames = []string{topic}
	req.TimeoutMillis = 5000
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.Topics {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			t.Fatalf("DeleteTopics: %v", err)
		}
	}
}

// TestStorm_DeletedTopic: a topic deleted while in use. Records sent to
// it fail with ErrUnknownTopic well before the delivery timeout (definite
// once nothing was sent; outcome unknown only for a batch the broker may
// have taken), and once nothing waits, metadata stops being asked for it.
func TestStorm_DeletedTopic(t *testing.T) {
	const topic = "deleted"
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic(topic, 2))
	rc := countRequests(c, kmsg.Metadata)
	h := &countingHandler{counts: map[string]int{}}
	p := newProducer(t, c, kpush.WithLogger(slog.New(h)))
	ctx := testCtx(t)
	sendKeyed(t, ctx, p, topic, 4, 2)
	deleteTopic(t, ctx, c, topic)
	check := func(what string, wantDefinite bool) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second) // the delivery timeout is 2m
		defer cancel()
		start := time.Now()
		_, err := p.Send(sctx, &kpush.Record{Topic: topic, Value: []byte(what)})
		took := time.Since(start)
		if !errors.Is(err, kpush.ErrUnknownTopic) {
			t.Fatalf("%s: %v after %v, want ErrUnknownTopic", what, err, took)
		}
		if wantDefinite && !errors.Is(err, kpush.ErrNotWritten) {
			t.Fatalf("%s: %v, want not written", what, err)
		}
		if took > 10*time.Second {
			t.Fatalf("%s: failed only after %v (delivery timeout 2m)", what, took)
		}
		t.Logf("%s: %v after %v", what, err, took)
	}
	check("first after the delete", false)
	check("second after the delete", true)
	meta, _ := window(3*time.Second, rc, kmsg.Metadata, h, "")
	t.Logf("%d metadata requests in an idle 3s after the topic failed", meta)
	if meta > 1 {
		t.Fatalf("%d metadata requests in an idle 3s after the deleted topic's records failed; want at most 1", meta)
	}
}

// TestStorm_DeniedTopic: metadata answers TOPIC_AUTHORIZATION_FAILED for a
// topic in use. Its records fail at once, definitely, with the broker's
// error, and the idle producer stops asking.
func TestStorm_DeniedTopic(t *testing.T) {
	const topic = "denied"
	rn := newRelNet()
	var deny atomic.Bool
	rn.hook = metadataRewriter(func(r *kmsg.MetadataResponse) {
		if !deny.Load() {
			return
		}
		for i := range r.Topics {
			r.Topics[i].ErrorCode = kerr.TopicAuthorizationFailed.Code
			r.Topics[i].Partitions = nil
		}
	})
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic(topic, 2), kafkatest.WithKfakeOptions(kfake.ListenFn(rn.listen)))
	rc := countRequests(c, kmsg.Metadata)
	h := &countingHandler{counts: map[string]int{}}
	p := newProducer(t, c, kpush.WithLogger(slog.New(h)), kpush.WithPartitioner(kpush.ManualPartitioner))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: topic, Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	deny.Store(true)
	// A record on a partition whose leader is gone (the broker is down
	// from the producer's view) waits for metadata, which now denies.
	c.Fake().ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake().KeepControl()
		return nil, errRelCutBefore, true // not applied: the connection closes
	})
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second) // the delivery timeout is 2m
	defer cancel()
	start := time.Now()
	_, err := p.Send(sctx, &kpush.Record{Topic: topic, Partition: 1, Value: []byte("denied")})
	t.Logf("%v after %v", err, time.Since(start))
	if !errors.Is(err, kerr.TopicAuthorizationFailed) || time.Since(start) > 10*time.Second {
		t.Fatalf("got %v after %v, want TOPIC_AUTHORIZATION_FAILED well before the delivery timeout", err, time.Since(start))
	}
	meta, _ := window(3*time.Second, rc, kmsg.Metadata, h, "")
	if meta > 1 {
		t.Fatalf("%d metadata requests in an idle 3s after the denied topic's records failed; want at most 1", meta)
	}
}

// TestStorm_UnusedTopicDropped: a topic no record used for the idle time
// (Java metadata.max.idle.ms; shortened here) is no longer named in
// metadata requests, while a topic in use still is; its next record
// brings it back.
func TestStorm_UnusedTopicDropped(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("used", 1), kafkatest.WithTopic("unused", 1))
	f := c.Fake()
	asked := make(chan []string, 64)
	f.ControlKey(int16(kmsg.Metadata), func(r kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		var names []string
		for _, rt := range r.(*kmsg.MetadataRequest).Topics {
			if rt.Topic != nil {
				names = append(names, *rt.Topic)
			}
		}
		select {
		case asked <- names:
		default:
		}
		return nil, nil, false
	})
	p := newProducer(t, c, kpush.WithMetadataMaxAge(100*time.Millisecond))
	p.SetTopicIdle(2 * time.Second) // more than the 1s granularity of a topic's last use
	ctx := testCtx(t)
	lastUse := time.Now() // no later than the engine's stamp of the last use
	for _, topic := range []string{"used", "unused"} {
		if _, err := p.Send(ctx, &kpush.Record{Topic: topic, Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	for len(asked) > 0 { // requests from before "unused" was known
		<-asked
	}
	deadline := time.After(10 * time.Second)
	for dropped := false; !dropped; {
		if _, err := p.Send(ctx, &kpush.Record{Topic: "used", Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		select {
		case names := <-asked:
			dropped = !slices.Contains(names, "unused")
			if dropped && !slices.Contains(names, "used") {
				t.Fatalf("metadata request names %v; the topic in use is missing", names)
			}
		case <-deadline:
			t.Fatal("the unused topic is still named in every metadata request after 10s (idle time 2s)")
		}
	}
	if d := time.Since(lastUse); d < 2*time.Second {
		t.Fatalf("unused topic dropped %v after its last record, before the idle time (2s)", d)
	}
	if _, err := p.Send(ctx, &kpush.Record{Topic: "unused", Value: []byte("back")}); err != nil {
		t.Fatalf("a dropped topic's next record: %v", err)
	}
}
