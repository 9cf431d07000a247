package main

// --metrics-addr: /metrics in the Prometheus text format for kpush produce
// and kpush bench, from the producer's hooks. The core module must not
// depend on client_golang, so this is a small hand-written exposition of
// a subset of kprom's metrics, with the same names, labels and buckets.
// bench also keeps per-stage samples for its latency breakdown.
//
// Goroutines: the hooks run on kpush's goroutines and the HTTP handler on
// the server's; cliMetrics.mu guards everything below it.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kpush/kpush"
)

// latencyBounds are kprom's latency buckets: 100µs doubling, 20 of them.
var latencyBounds = func() []float64 {
	b := make([]float64, 20)
	for i := range b {
		b[i] = 0.0001 * math.Pow(2, float64(i))
	}
	return b
}()

type histogram struct {
	counts []uint64 // per bound, not cumulative; one more for +Inf
	sum    float64
	n      uint64
}

func (h *histogram) observe(v float64) {
	if h.counts == nil {
		h.counts = make([]uint64, len(latencyBounds)+1)
	}
	i := sort.SearchFloat64s(latencyBounds, v) // first bound >= v: le semantics
	h.counts[i]++
	h.sum += v
	h.n++
}

// maxStageSamples bounds each stage's samples (memory), per bench level.
const maxStageSamples = 1 << 20

// cliMetrics is the CLI's hook: counters for /metrics, stage samples for
// bench. Safe for concurrent use.
type cliMetrics struct {
	mu         sync.Mutex
	counters   map[string]map[string]float64 // metric name → label set → value
	histograms map[string]map[string]*histogram
	bufRecords float64
	bufBytes   float64
	stages     bool          // keep stage samples (bench)
	samples    []stageSample // per record the broker answered (RecordDoneEvent.Stages)
}

// stageSample is one record's stages, then its Elapsed (their sum).
type stageSample [numStages + 1]time.Duration

// The stages of RecordDoneEvent.Stages, in the order of a record's path.
const (
	stageBuffer = iota
	stageQueue
	stageInFlight
	stageDeliver
	numStages
)

func newCLIMetrics(stages bool) *cliMetrics {
	return &cliMetrics{counters: map[string]map[string]float64{}, histograms: map[string]map[string]*histogram{}, stages: stages}
}

// labels renders label pairs in the text format: {a="x",b="y"}.
func labels(kv ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv[i])
		b.WriteString(`="`)
		b.WriteString(escapeLabel(kv[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func (m *cliMetrics) addLocked(name, lbls string, v float64) {
	c := m.counters[name]
	if c == nil {
		c = map[string]float64{}
		m.counters[name] = c
	}
	c[lbls] += v
}

func (m *cliMetrics) observeLocked(name, lbls string, v float64) {
	h := m.histograms[name]
	if h == nil {
		h = map[string]*histogram{}
		m.histograms[name] = h
	}
	if h[lbls] == nil {
		h[lbls] = &histogram{}
	}
	h[lbls].observe(v)
}

func brokerLabel(b kpush.Broker) string {
	if b.NodeID < 0 {
		return "metadata"
	}
	return strconv.Itoa(int(b.NodeID))
}

// OnRecordBuffered implements kpush.HookRecordBuffered.
func (m *cliMetrics) OnRecordBuffered(ev kpush.RecordBufferedEvent) {
	m.mu.Lock()
	m.bufRecords++
	m.bufBytes += float64(ev.Bytes)
	m.mu.Unlock()
}

// OnRecordDone implements kpush.HookRecordDone.
func (m *cliMetrics) OnRecordDone(ev kpush.RecordDoneEvent) {
	o := ev.Outcome().String()
	m.mu.Lock()
	defer m.mu.Unlock()
	l := labels("topic", ev.Topic, "outcome", o, "cause", kpush.CauseOf(ev.Err))
	m.addLocked("kpush_producer_records_total", l, 1)
	m.addLocked("kpush_producer_record_bytes_total", l, float64(ev.Bytes))
	m.observeLocked("kpush_producer_send_duration_seconds", labels("outcome", o), ev.Elapsed.Seconds())
	if ev.Bytes > 0 {
		m.bufRecords--
		m.bufBytes -= float64(ev.Bytes)
	}
	if m.stages && ev.Answered && len(m.samples) < maxStageSamples {
		st := ev.Stages
		m.samples = append(m.samples, stageSample{st.Buffer, st.Queue, st.InFlight, st.Deliver, ev.Elapsed})
	}
}

// OnRequestWritten implements kpush.HookRequestWritten.
func (m *cliMetrics) OnRequestWritten(ev kpush.RequestWrittenEvent) {
	b := brokerLabel(ev.Broker)
	m.mu.Lock()
	defer m.mu.Unlock()
	if ev.Err != nil {
		m.addLocked("kpush_producer_requests_total", labels("broker", b, "result", "error"), 1)
		return
	}
	m.addLocked("kpush_producer_request_bytes_total", labels("broker", b), float64(ev.Bytes))
}

// OnRequestAnswered implements kpush.HookRequestAnswered.
func (m *cliMetrics) OnRequestAnswered(ev kpush.RequestAnsweredEvent) {
	b := brokerLabel(ev.Broker)
	result := "ok"
	if ev.Err != nil {
		result = "error"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.addLocked("kpush_producer_requests_total", labels("broker", b, "result", result), 1)
	if ev.Err == nil {
		m.observeLocked("kpush_producer_request_duration_seconds", labels("broker", b), ev.Latency.Seconds())
	}
}

// OnThrottle implements kpush.HookThrottle.
func (m *cliMetrics) OnThrottle(ev kpush.ThrottleEvent) {
	b := brokerLabel(ev.Broker)
	m.mu.Lock()
	m.addLocked("kpush_producer_throttles_total", labels("broker", b), 1)
	m.addLocked("kpush_producer_throttle_seconds_total", labels("broker", b), ev.Duration.Seconds())
	m.mu.Unlock()
}

// OnRetry implements kpush.HookRetry.
func (m *cliMetrics) OnRetry(ev kpush.RetryEvent) {
	l := labels("topic", ev.Topic, "cause", kpush.CauseOf(ev.Cause))
	m.mu.Lock()
	m.addLocked("kpush_producer_retries_total", l, 1)
	m.addLocked("kpush_producer_retried_records_total", l, float64(ev.Records))
	m.mu.Unlock()
}

// OnEpochBump implements kpush.HookEpochBump.
func (m *cliMetrics) OnEpochBump(ev kpush.EpochBumpEvent) {
	m.mu.Lock()
	m.addLocked("kpush_producer_epoch_bumps_total", labels("cause", kpush.CauseOf(ev.Cause)), 1)
	m.mu.Unlock()
}

func (m *cliMetrics) conn(ev kpush.ConnEvent, event string) {
	m.mu.Lock()
	m.addLocked("kpush_producer_connection_events_total", labels("broker", brokerLabel(ev.Broker), "event", event), 1)
	m.mu.Unlock()
}

// OnConnOpened implements kpush.HookConnOpened.
func (m *cliMetrics) OnConnOpened(ev kpush.ConnEvent) { m.conn(ev, "opened") }

// OnConnClosed implements kpush.HookConnClosed.
func (m *cliMetrics) OnConnClosed(ev kpush.ConnEvent) { m.conn(ev, "closed") }

// OnConnFailed implements kpush.HookConnFailed.
func (m *cliMetrics) OnConnFailed(ev kpush.ConnEvent) { m.conn(ev, "failed") }

// OnAuth implements kpush.HookAuth.
func (m *cliMetrics) OnAuth(ev kpush.AuthEvent) {
	name := "kpush_producer_authentications_total"
	if ev.Err != nil {
		name = "kpush_producer_auth_failures_total"
	}
	m.mu.Lock()
	m.addLocked(name, labels("broker", brokerLabel(ev.Broker), "mechanism", ev.Mechanism), 1)
	m.mu.Unlock()
}

// metricHelp is each exported metric's type and help (as in kprom).
var metricHelp = map[string][2]string{
	"kpush_producer_records_total":            {"counter", "Records with an outcome, by topic, outcome (acked, not_written, unknown) and cause (empty when acked)."},
	"kpush_producer_record_bytes_total":       {"counter", "Encoded bytes of records with an outcome, by topic, outcome and cause (0 for records that failed before they were buffered)."},
	"kpush_producer_send_duration_seconds":    {"histogram", "Time from Send or SendAsync to the record's outcome, by outcome."},
	"kpush_producer_buffered_records":         {"gauge", "Records accepted into the buffer whose outcome was not delivered yet."},
	"kpush_producer_buffered_bytes":           {"gauge", "Encoded bytes of the records counted by buffered_records."},
	"kpush_producer_requests_total":           {"counter", "ProduceRequests ended, by broker and result (ok: answered; error: not written, or failed as a whole)."},
	"kpush_producer_request_bytes_total":      {"counter", "Record-batch bytes written in ProduceRequests, by broker."},
	"kpush_producer_request_duration_seconds": {"histogram", "Time from writing a ProduceRequest to its answer, by broker."},
	"kpush_producer_retries_total":            {"counter", "Batches sent again, by topic and cause."},
	"kpush_producer_retried_records_total":    {"counter", "Records in the batches counted by retries_total, by topic and cause."},
	"kpush_producer_throttles_total":          {"counter", "Produce responses asking kpush to wait (quotas, KIP-219), by broker."},
	"kpush_producer_throttle_seconds_total":   {"counter", "Throttle time the brokers asked for, by broker."},
	"kpush_producer_epoch_bumps_total":        {"counter", "Producer epoch bumps (KIP-360), by cause."},
	"kpush_producer_connection_events_total":  {"counter", "Broker connections opened, closed and failed to open, by broker and event."},
	"kpush_producer_auth_failures_total":      {"counter", "Failed SASL authentications and TLS handshakes, by broker and mechanism."},
	"kpush_producer_authentications_total":    {"counter", "Successful SASL authentications (re-authentications included), by broker and mechanism."},
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// writeText writes every metric in the Prometheus text format (0.0.4).
func (m *cliMetrics) writeText(w io.Writer) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	head := func(name string) {
		h := metricHelp[name]
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, h[1], name, h[0])
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range m.counters {
			if !yield(k) {
				return
			}
		}
	}) {
		head(name)
		series := m.counters[name]
		for _, l := range slices.Sorted(mapKeys(series)) {
			fmt.Fprintf(&b, "%s%s %s\n", name, l, formatFloat(series[l]))
		}
	}
	head("kpush_producer_buffered_records")
	fmt.Fprintf(&b, "kpush_producer_buffered_records %s\n", formatFloat(m.bufRecords))
	head("kpush_producer_buffered_bytes")
	fmt.Fprintf(&b, "kpush_producer_buffered_bytes %s\n", formatFloat(m.bufBytes))
	for _, name := range slices.Sorted(mapKeys(m.histograms)) {
		head(name)
		series := m.histograms[name]
		for _, l := range slices.Sorted(mapKeys(series)) {
			h := series[l]
			inner := strings.TrimSuffix(strings.TrimPrefix(l, "{"), "}")
			sep := ""
			if inner != "" {
				sep = ","
			}
			var cum uint64
			for i, bound := range latencyBounds {
				cum += h.counts[i]
				fmt.Fprintf(&b, "%s_bucket{%s%sle=\"%s\"} %d\n", name, inner, sep, formatFloat(bound), cum)
			}
			fmt.Fprintf(&b, "%s_bucket{%s%sle=\"+Inf\"} %d\n", name, inner, sep, h.n)
			fmt.Fprintf(&b, "%s_sum%s %s\n%s_count%s %d\n", name, l, formatFloat(h.sum), name, l, h.n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// serveMetrics serves /metrics on addr until the returned stop is called.
func serveMetrics(addr string, m *cliMetrics) (stop func(), _ net.Addr, _ error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		m.writeText(w)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the listener closed under it: nothing to report to
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}, l.Addr(), nil
}

// resetStages drops the stage samples (bench: one breakdown per level).
func (m *cliMetrics) resetStages() {
	m.mu.Lock()
	m.samples = m.samples[:0]
	m.mu.Unlock()
}

// stageNames label the breakdown's rows: the stages, then their sum.
var stageNames = [numStages + 1]string{
	"send → buffered",
	"buffered → request written",
	"request written → answered",
	"answered → outcome delivered",
	"send → outcome (the sum)",
}

// printStages prints the per-stage latency breakdown: every row is
// measured on the same records (those a broker answered), each on its
// own, so the means add up to the last row's mean; percentiles do not add
// up.
func (m *cliMetrics) printStages(w io.Writer) {
	m.mu.Lock()
	samples := slices.Clone(m.samples)
	m.mu.Unlock()
	fmt.Fprintf(w, "  %-44s %9s %9s %9s %9s\n", "stage (per record, from the hooks)", "mean µs", "p50 µs", "p99 µs", "records")
	d := make([]time.Duration, len(samples))
	for i, name := range stageNames {
		var sum time.Duration
		for j, s := range samples {
			d[j] = s[i]
			sum += s[i]
		}
		slices.Sort(d)
		var mean, p50, p99 float64
		if n := len(d); n > 0 {
			mean = float64(sum) / float64(n) / 1e3
			p50, p99 = float64(d[n/2])/1e3, float64(d[min(n-1, n*99/100)])/1e3
		}
		fmt.Fprintf(w, "  %-44s %9.1f %9.0f %9.0f %9d\n", name, mean, p50, p99, len(d))
	}
}
