package sink

// The reaper: one goroutine per producer (Engine.Reap) that ends records
// at their delivery deadline; expire.go does the work of one scan.
//
// Ownership: Reap runs on the reaper goroutine, started by the producer
// from the engine's group; it alone writes reaper.scans and reads kick.
// Any goroutine that hands batches over (the sink loop, connection reader
// goroutines) reads scans and may lower hint and fill kick; no lock.
//
// Hand-overs. A request's batches are, for a moment, in no list a scan
// visits: in Sink.produce between drain (out of the partition) and track
// (into the sink's in-flight requests), and on the reader goroutine
// between untrack and handle (back into the partition's retries). A scan
// that overlaps such a window misses the batch and its deadline, and
// would sleep until its next maxWait: a record could end up to maxWait
// (1 s) after its delivery deadline. So each hand-over reads the scan
// counter before the batches leave a list and again once they are in the
// next one (handedOver); when a scan ran meanwhile it lowers hint to the
// batches' earliest deadline and kicks the reaper, which re-arms its timer
// for it. Without a scan in between (nearly always) that costs two atomic
// loads.

import (
	"sync/atomic"
	"time"

	"github.com/kpush/kpush/internal/clock"
)

// reaper is the state the reaper goroutine shares with hand-overs.
type reaper struct {
	scans atomic.Uint64 // scans started plus scans finished: odd while one runs
	hint  atomic.Int64  // earliest deadline handed over during a scan (clock.Mono ns), 0 none
	kick  chan struct{} // one slot: hint was lowered

	// Tests only (set before any goroutine starts): testHookScanned runs
	// after every scan; testHookWindow runs in the middle of each
	// hand-over window.
	testHookScanned func()
	testHookWindow  func(handOver)
}

// handOver names a window in which batches are in no list the reaper scans.
type handOver uint8

const (
	drainToTrack    handOver = iota + 1 // Sink.produce: drained, not yet tracked
	untrackToHandle                     // reader goroutine: untracked, not yet handled
)

func (e *Engine) window(w handOver) {
	if h := e.reaper.testHookWindow; h != nil {
		h(w)
	}
}

// scanMark returns the scan counter; read it before batches leave a list
// the reaper scans, and pass it to handedOver once they are in the next.
func (e *Engine) scanMark() uint64 { return e.reaper.scans.Load() }

// handedOver tells the reaper about batches that were out of its sight
// since mark (scanMark), when a scan ran meanwhile: it re-arms the reaper
// for their earliest deadline. Batches already done only make it wake
// early once.
func (e *Engine) handedOver(mark uint64, batches []*Batch) {
	r := &e.reaper
	if now := r.scans.Load(); now == mark && mark&1 == 0 {
		return // no scan overlapped the window
	}
	var d int64
	for _, b := range batches {
		if b.deadline > 0 && (d == 0 || b.deadline < d) {
			d = b.deadline
		}
	}
	if d == 0 {
		return
	}
	for {
		old := r.hint.Load()
		if old != 0 && old <= d || r.hint.CompareAndSwap(old, d) {
			break
		}
	}
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Reap runs the reaper until the engine stops. Each scan (ExpireAll) covers
// the partitions and sinks list returns; the reaper then sleeps until the
// earliest deadline the scan found, at most maxWait (so a record buffered
// after a scan is seen in time when maxWait is well below the delivery
// timeout), and wakes earlier when a hand-over that overlapped a scan
// reports an earlier deadline.
func (e *Engine) Reap(list func() ([]*PartitionQueue, []*Sink), maxWait time.Duration) {
	r := &e.reaper
	t := time.NewTimer(maxWait)
	defer t.Stop()
	at := clock.Mono() + int64(maxWait) // when t fires
	for {
		select {
		case <-e.stop:
			return
		case <-r.kick:
			if h := r.hint.Swap(0); h > 0 && h < at {
				at = h
				t.Reset(max(time.Duration(h-clock.Mono()), 0))
			}
			continue
		case <-t.C:
		}
		r.scans.Add(1)
		parts, sinks := list()
		next := ExpireAll(parts, sinks)
		r.scans.Add(1)
		if h := r.testHookScanned; h != nil {
			h()
		}
		wait := maxWait
		if next > 0 {
			wait = min(wait, max(time.Duration(next-clock.Mono()), time.Millisecond))
		}
		at = clock.Mono() + int64(wait)
		t.Reset(wait)
	}
}
