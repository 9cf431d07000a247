package kpush

import (
	"sort"
	"time"
)

// Stats is a snapshot of a producer's counters.
type Stats struct {
	RecordsSent     int64 // acknowledged
	RecordsFailed   int64 // failed, any reason
	RecordsBuffered int64 // buffered or in flight now
	BytesBuffered   int64 // bytes reserved by those records
	Batches         int64 // record batches encoded
	BatchedRecords  int64 // records in those batches
	// AvgBatchRecords is records per batch, over the producer's life.
	AvgBatchRecords  float64
	Requests         int64 // produce requests written
	InflightRequests int64 // produce requests awaiting a response now
	Retries          int64 // batches sent again after a failure
	Throttles        int64 // responses that asked kpush to slow down
	// AuthFailures counts failures to authenticate or secure a broker
	// connection (errors matching ErrAuthentication); LastAuthError is the
	// latest one's message (the broker's words, never credentials), or "".
	AuthFailures  int64
	LastAuthError string
	// Reauthentications counts SASL sessions renewed before the broker's
	// session lifetime ended (KIP-368).
	Reauthentications int64
	Brokers           []BrokerStats
}

// BrokerStats describes one broker's connection.
type BrokerStats struct {
	ID   int32
	Addr string
	// Latency is a moving average of produce round trips.
	Latency time.Duration
}

// Stats returns a snapshot of the producer's counters. Safe to call at any
// time, from any goroutine; it takes no lock on the send path.
func (p *Producer) Stats() Stats {
	st := &p.eng.Stats
	bytes, recs := p.lim.Used()
	s := Stats{
		RecordsSent:      p.sent.Load(),
		RecordsFailed:    p.failed.Load(),
		RecordsBuffered:  recs,
		BytesBuffered:    bytes,
		Batches:          st.Batches.Load(),
		BatchedRecords:   st.BatchedRecords.Load(),
		Requests:         st.Requests.Load(),
		InflightRequests: st.Inflight.Load(),
		Retries:          st.Retries.Load(),
		Throttles:        st.Throttles.Load(),

		AuthFailures:      st.AuthFailures.Load(),
		Reauthentications: st.Reauths.Load(),
	}
	if last := st.LastAuthErr.Load(); last != nil {
		s.LastAuthError = *last
	}
	if s.Batches > 0 {
		s.AvgBatchRecords = float64(st.BatchedRecords.Load()) / float64(s.Batches)
	}
	p.mu.Lock()
	for id, sk := range p.sinks {
		s.Brokers = append(s.Brokers, BrokerStats{ID: id, Addr: sk.Addr(), Latency: sk.Latency()})
	}
	p.mu.Unlock()
	sort.Slice(s.Brokers, func(i, j int) bool { return s.Brokers[i].ID < s.Brokers[j].ID })
	return s
}
