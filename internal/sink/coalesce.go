package sink

// Coalescing: while a produce request to a broker is in flight, the loop
// holds the next one back until a response arrives, the ready partitions
// hold CoalesceBytes, a ready partition has a batch to resend, or
// CoalesceMaxWait has passed since the wait began — whichever comes first.
// Records that arrive meanwhile join the held request, so a busy broker gets
// fewer, larger requests; an idle one (nothing in flight) still gets every
// record at once.
//
// "A response" is one handled since the latest request was written (not
// since the wait began), so a response the loop had not looked at yet when
// the next records came still lets them go.
//
// Ownership: coalesceSince and coalesceAnswers are guarded by own (the
// loop reads them; produce, on the loop or an inline sender, sets
// coalesceAnswers). answers is incremented by whoever handles a
// response (the reader goroutine, a Send reading its own response, or the
// sender on a failed write) and read by the loop. coalesceNeed is set by the
// loop when a wait begins and counted down by PartitionQueue.Add on any
// goroutine; the Add that takes it to zero nudges the loop.

import (
	"time"

	"github.com/kpush/kpush/internal/clock"
)

// DefaultCoalesceMaxWait caps one coalescing wait, so that sending never
// depends on a response arriving.
const DefaultCoalesceMaxWait = 5 * time.Millisecond

// coalesceWaitLocked reports how long the loop should hold the next request
// back (0: send now). own held.
func (s *Sink) coalesceWaitLocked() time.Duration {
	cfg := &s.eng.cfg
	// acks=0 has no responses: a wait would always run to the cap.
	if cfg.CoalesceBytes <= 0 || cfg.Acks == 0 || s.inflight.Load() == 0 {
		s.endCoalesceLocked()
		return 0
	}
	if s.answers.Load() != s.coalesceAnswers {
		s.endCoalesceLocked() // a response arrived since the last request was written
		return 0
	}
	now := clock.Mono()
	if s.coalesceSince == 0 {
		s.coalesceSince = now
	}
	wait := time.Duration(s.coalesceSince + int64(cfg.CoalesceMaxWait) - now)
	if wait <= 0 {
		s.endCoalesceLocked()
		return 0
	}
	// The countdown starts before the scan, so an Add that the scan
	// misses (its partition already summed, or not yet on the ready list)
	// still counts; one that the scan also sees counts twice, which can
	// only end the wait early. Adds count down what is missing; the one
	// that crosses the threshold nudges the loop (PartitionQueue.Add).
	s.coalesceNeed.Store(int64(cfg.CoalesceBytes))
	bytes, resend := s.readyBytesLocked()
	if h := s.eng.testHooks.Load(); h != nil && h.CoalesceScanned != nil {
		h.CoalesceScanned()
	}
	if resend || s.coalesceNeed.Add(-int64(bytes)) <= 0 {
		s.endCoalesceLocked()
		return 0
	}
	return wait
}

// endCoalesceLocked ends a coalescing wait (or notes there is none). own
// held.
func (s *Sink) endCoalesceLocked() {
	s.coalesceSince = 0
	if s.coalesceNeed.Load() != 0 {
		s.coalesceNeed.Store(0)
	}
}

// readyBytesLocked sums the buffered record bytes of the ready partitions
// and reports whether one of them has a batch to resend. own held (lock
// order own → Partition.mu → Sink.mu: the list is copied first).
func (s *Sink) readyBytesLocked() (bytes int, resend bool) {
	s.mu.Lock()
	s.scratch = append(s.scratch[:0], s.ready...)
	s.mu.Unlock()
	for _, p := range s.scratch {
		p.mu.Lock()
		bytes += p.recBytes
		resend = resend || len(p.retry) > 0
		p.mu.Unlock()
	}
	clear(s.scratch)
	return bytes, resend
}

// added counts size bytes buffered for a partition this sink leads, and
// nudges the loop when they complete a coalescing wait's threshold.
func (s *Sink) added(size int64) {
	if s.coalesceNeed.Load() > 0 {
		if n := s.coalesceNeed.Add(-size); n <= 0 && n+size > 0 {
			s.nudge()
		}
	}
}
