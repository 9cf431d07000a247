package kprom_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
	"github.com/kpush/kpush/kprom"
)

// TestMetrics_KnownTrafficAndFaults: the counters match what was sent, the
// failures and the injected retry, and the metrics pass the linter.
func TestMetrics_KnownTrafficAndFaults(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("kp", 1))
	m := kprom.New()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...), kpush.WithHooks(m), kpush.WithRetryBackoff(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 10
	for i := range n {
		if i == 5 {
			c.Fake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "kp", Err: kerr.NotEnoughReplicas})
		}
		if _, err := p.Send(ctx, &kpush.Record{Topic: "kp", Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Send(ctx, &kpush.Record{Value: []byte("no topic")}); !errors.Is(err, kpush.ErrNoTopic) {
		t.Fatal(err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"acked", counter(t, reg, "kpush_producer_records_total", map[string]string{"topic": "kp", "outcome": "acked", "cause": ""}), n},
		{"no topic", counter(t, reg, "kpush_producer_records_total", map[string]string{"topic": "", "outcome": "not_written", "cause": "no_topic"}), 1},
		{"retry", counter(t, reg, "kpush_producer_retries_total", map[string]string{"topic": "kp", "cause": "not_enough_replicas"}), 1},
		{"retried records", counter(t, reg, "kpush_producer_retried_records_total", map[string]string{"topic": "kp", "cause": "not_enough_replicas"}), 1},
	} {
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	for name, want := range map[string]float64{
		"kpush_producer_buffered_records":  0,
		"kpush_producer_buffered_bytes":    0,
		"kpush_producer_inflight_requests": 0,
	} {
		if got := sum(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := sum(t, reg, "kpush_producer_requests_total"); got < n+1 {
		t.Errorf("%v requests counted, want at least %d (one per sync send, plus the retry)", got, n+1)
	}
	opened, closed := 0.0, 0.0
	for _, mf := range gather(t, reg) {
		if mf.GetName() != "kpush_producer_connection_events_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "event" && l.GetValue() == "opened" {
					opened += mt.GetCounter().GetValue()
				}
				if l.GetName() == "event" && l.GetValue() == "closed" {
					closed += mt.GetCounter().GetValue()
				}
			}
		}
	}
	if opened < 2 || opened != closed {
		t.Errorf("%v connections opened, %v closed after Close; want ≥ 2 (metadata, produce), all closed", opened, closed)
	}
	if problems, err := testutil.CollectAndLint(m); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// TestMetrics_Throttle: a throttled answer counts its time.
func TestMetrics_Throttle(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("kt", 1))
	m := kprom.New()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...), kpush.WithHooks(m))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := p.Send(ctx, &kpush.Record{Topic: "kt", Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	once := false // the cluster's goroutine only
	c.Fake().ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if once {
			return nil, nil, false
		}
		once = true
		c.Fake().KeepControl()
		// A retriable rejection, throttled.
		pr := req.(*kmsg.ProduceRequest)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		resp.ThrottleMillis = 20
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.NotEnoughReplicas.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	if _, err := p.Send(ctx, &kpush.Record{Topic: "kt", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if got := sum(t, reg, "kpush_producer_throttles_total"); got != 1 {
		t.Errorf("%v throttles, want 1", got)
	}
	if got := sum(t, reg, "kpush_producer_throttle_seconds_total"); got != 0.02 {
		t.Errorf("%v throttle seconds, want 0.02", got)
	}
}

func gather(t *testing.T, reg *prometheus.Registry) []*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// sum adds every series of a counter or gauge.
func sum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	total := 0.0
	for _, mf := range gather(t, reg) {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			total += mt.GetCounter().GetValue() + mt.GetGauge().GetValue()
		}
	}
	return total
}

// counter returns a collector for one series, for testutil.ToFloat64.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) prometheus.Collector {
	t.Helper()
	v := 0.0
	for _, mf := range gather(t, reg) {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			v = mt.GetCounter().GetValue()
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "probe"})
	g.Set(v)
	return g
}
