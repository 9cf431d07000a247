package kpush_test

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
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
