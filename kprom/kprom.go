// Package kprom exports a kpush producer's metrics to Prometheus. It is its
// own module, so the core kpush module does not depend on client_golang.
//
//	m := kprom.New()
//	prometheus.MustRegister(m)
//	p, err := kpush.New(kpush.WithBrokers(addr), kpush.WithHooks(m))
//
// Metrics is a kpush hook (kpush.WithHooks) and a prometheus.Collector. Its
// metrics and their labels are listed in docs/observability.md; labels are
// bounded: topic, outcome ("acked", "not_written", "unknown"), cause
// (kpush.CauseOf), broker (the node id; "metadata" for connections dialed
// by address), never a per-record value. One Metrics serves one producer;
// give each producer its own (and a registry, or
// prometheus.WrapRegistererWith a constant label, per producer).
//
// Goroutines and ownership: Metrics has none; its hooks run on kpush's
// goroutines (see kpush.Hook) and only update client_golang's metric
// values, which are safe for concurrent use. The per-record series are
// cached in a copy-on-write map (recordCache): read with one atomic load,
// replaced under recordMu when a new (topic, outcome, cause) appears.
package kprom

import (
	"maps"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kpush/kpush"
)

const ns = "kpush_producer"

// Metrics counts a producer's records, requests, connections and faults.
// It is safe for concurrent use.
type Metrics struct {
	records       *prometheus.CounterVec
	recordBytes   *prometheus.CounterVec
	sendDuration  *prometheus.HistogramVec
	bufRecords    prometheus.Gauge
	bufBytes      prometheus.Gauge
	requests      *prometheus.CounterVec
	requestBytes  *prometheus.CounterVec
	reqDuration   *prometheus.HistogramVec
	reqBatches    prometheus.Histogram
	reqRecords    prometheus.Histogram
	inflight      *prometheus.GaugeVec
	retries       *prometheus.CounterVec
	retryRecords  *prometheus.CounterVec
	throttles     *prometheus.CounterVec
	throttleTime  *prometheus.CounterVec
	bumps         *prometheus.CounterVec
	conns         *prometheus.CounterVec
	authFailures  *prometheus.CounterVec
	authSuccesses *prometheus.CounterVec
	all           []prometheus.Collector

	// sendDur is sendDuration's series per kpush.Outcome, resolved in New.
	sendDur [kpush.OutcomeUnknown + 1]prometheus.Observer
	// recordCache maps each (topic, outcome, cause) seen to its series of
	// records_total and record_bytes_total, so a record's outcome costs
	// one map read instead of two label lookups (a hash of the label
	// values and a lock each) and allocates nothing once its combination
	// was seen. Copy-on-write: never modified once stored; recordMu
	// serializes the writers. Bounded as the labels are.
	recordCache atomic.Pointer[map[recordKey]*recordSeries]
	recordMu    sync.Mutex
}

// recordKey is the label values of a record's series.
type recordKey struct {
	topic   string
	cause   string
	outcome kpush.Outcome
}

// recordSeries are the counters of one recordKey.
type recordSeries struct {
	records prometheus.Counter
	bytes   prometheus.Counter
}

// latencyBuckets span 100µs to ~52s, doubling.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2, 20)

// countBuckets span 1 to 16384, doubling (batches or records per request).
var countBuckets = prometheus.ExponentialBuckets(1, 2, 15)

// New returns metrics to register with a prometheus.Registerer and to
// install with kpush.WithHooks.
func New() *Metrics {
	m := &Metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "records_total",
			Help: "Records with an outcome, by topic, outcome (acked, not_written, unknown) and cause (empty when acked)."},
			[]string{"topic", "outcome", "cause"}),
		recordBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "record_bytes_total",
			Help: "Encoded bytes of records with an outcome, by topic, outcome and cause (0 for records that failed before they were buffered)."},
			[]string{"topic", "outcome", "cause"}),
		sendDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "send_duration_seconds",
			Help: "Time from Send or SendAsync to the record's outcome, by outcome.", Buckets: latencyBuckets},
			[]string{"outcome"}),
		bufRecords: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "buffered_records",
			Help: "Records accepted into the buffer whose outcome was not delivered yet."}),
		bufBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "buffered_bytes",
			Help: "Encoded bytes of the records counted by buffered_records."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "requests_total",
			Help: "ProduceRequests ended, by broker and result (ok: answered; error: not written, or failed as a whole)."},
			[]string{"broker", "result"}),
		requestBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "request_bytes_total",
			Help: "Record-batch bytes written in ProduceRequests, by broker."},
			[]string{"broker"}),
		reqDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "request_duration_seconds",
			Help: "Time from writing a ProduceRequest to its answer, by broker.", Buckets: latencyBuckets},
			[]string{"broker"}),
		reqBatches: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "request_batches",
			Help: "Record batches (partitions) per ProduceRequest written.", Buckets: countBuckets}),
		reqRecords: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "request_records",
			Help: "Records per ProduceRequest written.", Buckets: countBuckets}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "inflight_requests",
			Help: "ProduceRequests written and not yet answered, by broker."},
			[]string{"broker"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "retries_total",
			Help: "Batches sent again, by topic and cause."},
			[]string{"topic", "cause"}),
		retryRecords: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "retried_records_total",
			Help: "Records in the batches counted by retries_total, by topic and cause."},
			[]string{"topic", "cause"}),
		throttles: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "throttles_total",
			Help: "Produce responses asking kpush to wait (quotas, KIP-219), by broker."},
			[]string{"broker"}),
		throttleTime: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "throttle_seconds_total",
			Help: "Throttle time the brokers asked for, by broker."},
			[]string{"broker"}),
		bumps: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "epoch_bumps_total",
			Help: "Producer epoch bumps (KIP-360), by cause."},
			[]string{"cause"}),
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "connection_events_total",
			Help: "Broker connections opened, closed and failed to open, by broker and event."},
			[]string{"broker", "event"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "auth_failures_total",
			Help: "Failed SASL authentications and TLS handshakes, by broker and mechanism."},
			[]string{"broker", "mechanism"}),
		authSuccesses: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "authentications_total",
			Help: "Successful SASL authentications (re-authentications included), by broker and mechanism."},
			[]string{"broker", "mechanism"}),
	}
	m.all = []prometheus.Collector{m.records, m.recordBytes, m.sendDuration, m.bufRecords, m.bufBytes,
		m.requests, m.requestBytes, m.reqDuration, m.reqBatches, m.reqRecords, m.inflight,
		m.retries, m.retryRecords, m.throttles, m.throttleTime, m.bumps, m.conns, m.authFailures, m.authSuccesses}
	for o := range m.sendDur {
		m.sendDur[o] = m.sendDuration.WithLabelValues(kpush.Outcome(o).String())
	}
	m.recordCache.Store(&map[recordKey]*recordSeries{})
	return m
}

// maxRecordCache bounds the copy-on-write series cache: filling it costs
// O(n²) copies, so past this many (topic, outcome, cause) keys series are
// looked up per record instead of cached.
const maxRecordCache = 4096

// series returns the cached series of k, creating them the first time.
func (m *Metrics) series(k recordKey) *recordSeries {
	if s := (*m.recordCache.Load())[k]; s != nil {
		return s
	}
	m.recordMu.Lock()
	defer m.recordMu.Unlock()
	old := *m.recordCache.Load()
	if s := old[k]; s != nil {
		return s // another goroutine added it meanwhile
	}
	o := k.outcome.String()
	s := &recordSeries{
		records: m.records.WithLabelValues(k.topic, o, k.cause),
		bytes:   m.recordBytes.WithLabelValues(k.topic, o, k.cause),
	}
	if len(old) >= maxRecordCache {
		// Copying the map per new key is O(n) each: past the cap (thousands
		// of topics, or bad topic names from user input) look the series up
		// per record instead, as client_golang does, O(1) per new series.
		return s
	}
	next := maps.Clone(old)
	next[k] = s
	m.recordCache.Store(&next)
	return s
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.all {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.all {
		c.Collect(ch)
	}
}

// broker is a broker's label value: its node id, or "metadata".
func broker(b kpush.Broker) string {
	if b.NodeID < 0 {
		return "metadata"
	}
	return strconv.Itoa(int(b.NodeID))
}

// OnRecordBuffered implements kpush.HookRecordBuffered.
func (m *Metrics) OnRecordBuffered(ev kpush.RecordBufferedEvent) {
	m.bufRecords.Inc()
	m.bufBytes.Add(float64(ev.Bytes))
}

// OnRecordDone implements kpush.HookRecordDone.
func (m *Metrics) OnRecordDone(ev kpush.RecordDoneEvent) {
	o := ev.Outcome()
	k := recordKey{topic: ev.Topic, outcome: o}
	if ev.Err != nil {
		k.cause = kpush.CauseOf(ev.Err)
	}
	s := m.series(k)
	s.records.Inc()
	s.bytes.Add(float64(ev.Bytes))
	m.sendDur[o].Observe(ev.Elapsed.Seconds())
	if ev.Bytes > 0 { // it was buffered (kpush.RecordDoneEvent.Bytes)
		m.bufRecords.Dec()
		m.bufBytes.Sub(float64(ev.Bytes))
	}
}

// OnRequestWritten implements kpush.HookRequestWritten.
func (m *Metrics) OnRequestWritten(ev kpush.RequestWrittenEvent) {
	b := broker(ev.Broker)
	if ev.Err != nil { // not written: no answer will come
		m.requests.WithLabelValues(b, "error").Inc()
		return
	}
	m.inflight.WithLabelValues(b).Inc()
	m.requestBytes.WithLabelValues(b).Add(float64(ev.Bytes))
	m.reqBatches.Observe(float64(ev.Batches))
	m.reqRecords.Observe(float64(ev.Records))
}

// OnRequestAnswered implements kpush.HookRequestAnswered.
func (m *Metrics) OnRequestAnswered(ev kpush.RequestAnsweredEvent) {
	b := broker(ev.Broker)
	result := "ok"
	if ev.Err != nil {
		result = "error"
	}
	m.requests.WithLabelValues(b, result).Inc()
	m.inflight.WithLabelValues(b).Dec()
	if ev.Err == nil {
		m.reqDuration.WithLabelValues(b).Observe(ev.Latency.Seconds())
	}
}

// OnThrottle implements kpush.HookThrottle.
func (m *Metrics) OnThrottle(ev kpush.ThrottleEvent) {
	b := broker(ev.Broker)
	m.throttles.WithLabelValues(b).Inc()
	m.throttleTime.WithLabelValues(b).Add(ev.Duration.Seconds())
}

// OnRetry implements kpush.HookRetry.
func (m *Metrics) OnRetry(ev kpush.RetryEvent) {
	c := kpush.CauseOf(ev.Cause)
	m.retries.WithLabelValues(ev.Topic, c).Inc()
	m.retryRecords.WithLabelValues(ev.Topic, c).Add(float64(ev.Records))
}

// OnEpochBump implements kpush.HookEpochBump.
func (m *Metrics) OnEpochBump(ev kpush.EpochBumpEvent) {
	m.bumps.WithLabelValues(kpush.CauseOf(ev.Cause)).Inc()
}

// OnConnOpened implements kpush.HookConnOpened.
func (m *Metrics) OnConnOpened(ev kpush.ConnEvent) {
	m.conns.WithLabelValues(broker(ev.Broker), "opened").Inc()
}

// OnConnClosed implements kpush.HookConnClosed.
func (m *Metrics) OnConnClosed(ev kpush.ConnEvent) {
	m.conns.WithLabelValues(broker(ev.Broker), "closed").Inc()
}

// OnConnFailed implements kpush.HookConnFailed.
func (m *Metrics) OnConnFailed(ev kpush.ConnEvent) {
	m.conns.WithLabelValues(broker(ev.Broker), "failed").Inc()
}

// OnAuth implements kpush.HookAuth.
func (m *Metrics) OnAuth(ev kpush.AuthEvent) {
	if ev.Err != nil {
		m.authFailures.WithLabelValues(broker(ev.Broker), ev.Mechanism).Inc()
		return
	}
	m.authSuccesses.WithLabelValues(broker(ev.Broker), ev.Mechanism).Inc()
}
