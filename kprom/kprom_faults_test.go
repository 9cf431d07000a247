package kprom_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
	"github.com/kpush/kpush/kprom"
)

// bufferedBytes is a hook that adds up RecordBufferedEvent.Bytes.
type bufferedBytes struct {
	mu sync.Mutex
	n  float64
}

func (b *bufferedBytes) OnRecordBuffered(ev kpush.RecordBufferedEvent) {
	b.mu.Lock()
	b.n += float64(ev.Bytes)
	b.mu.Unlock()
}

// histCount returns the sample count and sum of a histogram's series
// whose labels include labels.
func histCount(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (uint64, float64) {
	t.Helper()
	var n uint64
	var sum float64
	for _, mf := range gather(t, reg) {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					continue series
				}
			}
			n += mt.GetHistogram().GetSampleCount()
			sum += mt.GetHistogram().GetSampleSum()
		}
	}
	return n, sum
}

// TestMetrics_BytesHistogramsAndUnknownOutcome: record_bytes_total holds
// the encoded bytes kpush buffered; send_duration_seconds has one sample
// per record of its outcome; the request histograms one per request
// answered, whose records add up to those sent; and a record whose
// delivery timeout ends it in flight counts as outcome "unknown" with
// cause delivery_timeout.
func TestMetrics_BytesHistogramsAndUnknownOutcome(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("kb", 1))
	m := kprom.New()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	bb := &bufferedBytes{}
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...), kpush.WithHooks(m, bb),
		kpush.WithDeliveryTimeout(400*time.Millisecond), kpush.WithRequestTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 12
	for i := range n {
		if _, err := p.Send(ctx, &kpush.Record{Topic: "kb", Value: make([]byte, 10*i)}); err != nil {
			t.Fatal(err)
		}
	}
	bb.mu.Lock()
	ackedBytes := bb.n
	bb.mu.Unlock()
	if got := testutil.ToFloat64(counter(t, reg, "kpush_producer_record_bytes_total", map[string]string{"topic": "kb", "outcome": "acked", "cause": ""})); got != ackedBytes || got == 0 {
		t.Errorf("record_bytes_total acked = %v, want the %v bytes buffered", got, ackedBytes)
	}
	if cnt, _ := histCount(t, reg, "kpush_producer_send_duration_seconds", map[string]string{"outcome": "acked"}); cnt != n {
		t.Errorf("send_duration_seconds{outcome=acked} has %d samples, want %d", cnt, n)
	}
	ok := testutil.ToFloat64(counter(t, reg, "kpush_producer_requests_total", map[string]string{"broker": "0", "result": "ok"}))
	if cnt, _ := histCount(t, reg, "kpush_producer_request_duration_seconds", nil); float64(cnt) != ok || cnt < n {
		t.Errorf("request_duration_seconds has %d samples; %v requests answered ok, want one each and at least %d", cnt, ok, n)
	}
	if cnt, sum := histCount(t, reg, "kpush_producer_request_records", nil); float64(cnt) != ok || sum != n {
		t.Errorf("request_records: %d samples adding up to %v records, want %v and %d", cnt, sum, ok, n)
	}

	// The broker holds every produce request past the delivery timeout.
	release := make(chan struct{})
	f := c.Fake()
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		f.SleepControl(func() { <-release })
		return nil, nil, false
	})
	_, err = p.Send(ctx, &kpush.Record{Topic: "kb", Value: []byte("held")})
	close(release)
	if kpush.OutcomeOf(err) != kpush.OutcomeUnknown {
		t.Fatalf("Send = %v, want an unknown outcome", err)
	}
	if got := testutil.ToFloat64(counter(t, reg, "kpush_producer_records_total", map[string]string{"topic": "kb", "outcome": "unknown", "cause": "delivery_timeout"})); got != 1 {
		t.Errorf("records_total{outcome=unknown,cause=delivery_timeout} = %v, want 1", got)
	}
	if cnt, _ := histCount(t, reg, "kpush_producer_send_duration_seconds", map[string]string{"outcome": "unknown"}); cnt != 1 {
		t.Errorf("send_duration_seconds{outcome=unknown} has %d samples, want 1", cnt)
	}
	if problems, err := testutil.CollectAndLint(m); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// TestMetrics_EpochBumpAndAuth: a lost producer id counts one epoch bump
// by its cause; SASL logins count per mechanism, a refused one as an
// authentication failure and a failed connection.
func TestMetrics_EpochBumpAndAuth(t *testing.T) {
	const user, secret = "kprom-user", "kprom-secret"
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("ke", 1), kafkatest.WithSASL(kafkatest.SASLPlain, user, secret))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	newProducer := func(password string) (*kpush.Producer, *prometheus.Registry) {
		m := kprom.New()
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(m)
		p, err := kpush.New(kpush.WithBrokers(c.Addrs()...), kpush.WithHooks(m),
			kpush.WithSASL(kpush.SASLPlain(user, password)), kpush.WithRetryBackoff(5*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close(context.Background()) })
		return p, reg
	}

	p, reg := newProducer(secret)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "ke", Value: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	c.Fake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "ke", Err: kerr.UnknownProducerID})
	if _, err := p.Send(ctx, &kpush.Record{Topic: "ke", Value: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	bumps := func() float64 {
		return testutil.ToFloat64(counter(t, reg, "kpush_producer_epoch_bumps_total", map[string]string{"cause": "unknown_producer_id"}))
	}
	for deadline := time.Now().Add(10 * time.Second); bumps() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond) // the metadata goroutine reports the bump
	}
	if got := bumps(); got != 1 {
		t.Errorf("epoch_bumps_total{cause=unknown_producer_id} = %v, want 1", got)
	}
	if got := sum(t, reg, "kpush_producer_authentications_total"); got < 2 {
		t.Errorf("%v successful logins counted, want at least 2 (metadata, produce)", got)
	}
	if got := sum(t, reg, "kpush_producer_auth_failures_total"); got != 0 {
		t.Errorf("%v auth failures with the right password", got)
	}

	q, qreg := newProducer("wrong")
	if _, err := q.Send(ctx, &kpush.Record{Topic: "ke", Value: []byte("c")}); !errors.Is(err, kpush.ErrAuthentication) {
		t.Fatalf("Send with a wrong password: %v", err)
	}
	if got := testutil.ToFloat64(counter(t, qreg, "kpush_producer_auth_failures_total", map[string]string{"broker": "metadata", "mechanism": "PLAIN"})); got < 1 {
		t.Errorf("auth_failures_total{broker=metadata,mechanism=PLAIN} = %v, want at least 1", got)
	}
	if got := testutil.ToFloat64(counter(t, qreg, "kpush_producer_connection_events_total", map[string]string{"broker": "metadata", "event": "failed"})); got < 1 {
		t.Errorf("connection_events_total{broker=metadata,event=failed} = %v, want at least 1", got)
	}
}

// TestMetrics_RecordOutcomeAllocatesNothing: once a (topic, outcome,
// cause) was seen, counting a record's outcome allocates nothing, and
// each combination has its own series.
func TestMetrics_RecordOutcomeAllocatesNothing(t *testing.T) {
	m := kprom.New()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	failed := &kpush.ProduceError{Topic: "x", Partition: 0, Err: kerr.NotEnoughReplicas}
	evs := []kpush.RecordDoneEvent{
		{Topic: "x", Partition: 0, Bytes: 100, Elapsed: time.Millisecond},
		{Topic: "y", Partition: 1, Bytes: 50, Elapsed: time.Millisecond},
		{Topic: "x", Partition: 0, Bytes: 7, Err: failed, Elapsed: time.Millisecond},
	}
	for _, ev := range evs {
		m.OnRecordDone(ev)
	}
	if !raceEnabled {
		if a := testing.AllocsPerRun(1000, func() {
			for _, ev := range evs {
				m.OnRecordDone(ev)
			}
		}); a != 0 {
			t.Errorf("%v allocations per 3 outcomes after warm-up, want 0", a)
		}
	}
	want := map[[3]string]float64{
		{"x", "acked", ""}:                          100,
		{"y", "acked", ""}:                          50,
		{"x", "not_written", "not_enough_replicas"}: 7,
	}
	runs := 1 + 1001.0 // warm-up, then AllocsPerRun's warm-up and runs
	if raceEnabled {
		runs = 1
	}
	for k, bytes := range want {
		l := map[string]string{"topic": k[0], "outcome": k[1], "cause": k[2]}
		if got := testutil.ToFloat64(counter(t, reg, "kpush_producer_records_total", l)); got != runs {
			t.Errorf("records_total%v = %v, want %v", k, got, runs)
		}
		if got := testutil.ToFloat64(counter(t, reg, "kpush_producer_record_bytes_total", l)); got != runs*bytes {
			t.Errorf("record_bytes_total%v = %v, want %v", k, got, runs*bytes)
		}
	}
	if n := testutil.CollectAndCount(m, "kpush_producer_records_total"); n != 3 {
		t.Errorf("%d records_total series, want 3", n)
	}
}
