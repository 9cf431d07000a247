// Package sink sends records to brokers: per-partition accumulators, one
// sender loop per broker, response handling and retries.
//
// Goroutines and ownership (this file and sink.go):
//   - Engine holds configuration (read-only after NewEngine), atomic
//     counters, and the goroutine group (Go/Wait) that every engine
//     goroutine is started from.
//   - One sink goroutine per broker (Sink.loop) owns that broker's
//     connection: it dials, drains ready partitions into ProduceRequests and
//     writes them, keeping at most MaxInflight requests outstanding. While
//     the sink is idle (nothing in flight, connection up) a synchronous
//     Send's goroutine writes its own request instead (Sink.kick), holding
//     the same ownership (Sink.own).
//   - The connection's reader goroutine (internal/wire) runs Sink.handle for
//     each response, in order: it updates partitions and wakes synchronous
//     waiters directly (one wake per record, no herd). A Send that wrote a
//     lone request inline and cannot be canceled may read that response
//     and run Sink.handle on its own goroutine instead (Sink.kick,
//     wire/ownread.go), after releasing Sink.own.
//   - One callback goroutine per sink (callbacks.run) runs asynchronous
//     callbacks from per-partition queues (callbacks.go), so a slow
//     callback never delays reading responses, and one partition's
//     callbacks keep their order across leader moves.
package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kpush/kpush/internal/batch"
	"github.com/kpush/kpush/internal/idem"
	"github.com/kpush/kpush/internal/wire"
)

// Engine errors; the root package maps them to its public errors.
var (
	// ErrDeliveryTimeout: the record's delivery timeout passed.
	ErrDeliveryTimeout = errors.New("delivery timeout expired")
	// ErrSequenceReset: the producer epoch was bumped while this batch's
	// outcome was unknown; resending it could duplicate it (KIP-360).
	ErrSequenceReset = errors.New("producer epoch reset while the batch's outcome was unknown")
	// ErrClosing: the producer closed before the record had an outcome.
	ErrClosing = errors.New("producer closed")
)

// Config is the engine's configuration.
type Config struct {
	Acks           int16 // -1 all, 1 leader, 0 none
	MaxInflight    int   // requests per broker
	MaxBatchBytes  int
	Codec          batch.Codec
	Linger         time.Duration
	RequestTimeout time.Duration
	RetryBackoff   time.Duration
	Wire           *wire.Config
	Logger         *slog.Logger
	// TriggerMetadata asks for a metadata refresh (leader moved, unknown
	// partition).
	TriggerMetadata func()
	// RequestBump asks for a new producer epoch (KIP-360), given the ID
	// whose sequences went wrong.
	RequestBump func(old idem.ID)
	// Release returns the buffer space of records that have an outcome
	// (n records, failed of them failed, bytes in all); called once per
	// batch of outcomes, before synchronous waiters wake.
	Release func(n, failed int, bytes int64)
	// ReleaseCanceled returns the buffer space of n canceled records (their
	// Send already gave up and counted them) once their partition dropped
	// them, so the memory bound covers records not yet dropped.
	ReleaseCanceled func(n int, bytes int64)
	// MaxRequestBytes caps a whole ProduceRequest's batches (0: no cap
	// beyond MaxBatchBytes per batch).
	MaxRequestBytes int
	// Hooks are the observability callbacks (hooks.go); zero: none.
	Hooks Hooks
	// CoalesceBytes: while a request to a broker is in flight, the next
	// one waits for a response unless the ready partitions hold this many
	// bytes or one has a resend (coalesce.go); 0: no waiting.
	CoalesceBytes int
	// CoalesceMaxWait caps one such wait; 0: DefaultCoalesceMaxWait.
	CoalesceMaxWait time.Duration
}

// Stats are the engine's counters.
type Stats struct {
	Batches        atomic.Int64
	BatchedRecords atomic.Int64
	Requests       atomic.Int64
	Inflight       atomic.Int64
	Retries        atomic.Int64
	Throttles      atomic.Int64
	AuthFailures   atomic.Int64
	Reauths        atomic.Int64
	LastAuthErr    atomic.Pointer[string]
}

// Engine is shared by every sink and partition of one producer.
type Engine struct {
	cfg   Config
	idem  *idem.Manager
	Stats Stats

	wg       sync.WaitGroup
	stop     chan struct{}
	stopOnce sync.Once
	ctx      context.Context // canceled by Stop; bounds dials
	cancel   context.CancelFunc

	recSlices sync.Pool // []*Pending for batches
	bufs      sync.Pool // []byte for encoded batches

	leaderHints func([]LeaderHint, []Endpoint) // see hint.go; set before any sink

	bumpCause atomic.Pointer[error] // the broker error behind the last epoch bump asked for (hooks.go)

	reaper    reaper                    // shared with the reaper goroutine (reaper.go)
	testHooks atomic.Pointer[TestHooks] // nil in production
}

// TestHooks are seams for the root package's tests; production never sets
// them.
type TestHooks struct {
	// LoopWoken runs each time a sink's loop goroutine wakes up (a nudge
	// or one of its timers).
	LoopWoken func()
	// Written runs after each ProduceRequest is written; inline reports
	// that a Send caller wrote it (Sink.kick), not the sink's loop.
	Written func(inline bool)
	// OwnRead runs after a Send caller that was lent its request's
	// response read (Sink.kick) tried it; read reports that it read the
	// response (false: the connection's reader goroutine took it back).
	OwnRead func(read bool)
	// CoalesceScanned runs on a sink's loop, own held, right after a
	// coalescing wait summed the ready partitions' bytes (coalesce.go):
	// records added from it race the wait's accounting.
	CoalesceScanned func()
}

// SetTestHooks installs h (tests only; an atomic swap, so a test may also
// install hooks mid-run, as OnCoalesceScanned does).
func (e *Engine) SetTestHooks(h TestHooks) { e.testHooks.Store(&h) }

// NewEngine returns an engine; nothing starts until sinks are created.
func NewEngine(cfg Config, m *idem.Manager) *Engine {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CoalesceMaxWait <= 0 {
		cfg.CoalesceMaxWait = DefaultCoalesceMaxWait
	}
	if cfg.TriggerMetadata == nil {
		cfg.TriggerMetadata = func() {}
	}
	if cfg.RequestBump == nil {
		cfg.RequestBump = func(idem.ID) {}
	}
	if cfg.Release == nil {
		cfg.Release = func(int, int, int64) {}
	}
	if cfg.ReleaseCanceled == nil {
		cfg.ReleaseCanceled = func(int, int64) {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Engine{cfg: cfg, idem: m, stop: make(chan struct{}), ctx: ctx, cancel: cancel}
	e.reaper.kick = make(chan struct{}, 1)
	return e
}

// Go runs fn on a new goroutine tracked by Wait.
func (e *Engine) Go(fn func()) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		fn()
	}()
}

// Stop tells every engine goroutine to exit; Wait waits for them.
func (e *Engine) Stop() {
	e.stopOnce.Do(func() {
		close(e.stop)
		e.cancel()
	})
}

// Stopping is closed by Stop.
func (e *Engine) Stopping() <-chan struct{} { return e.stop }

// Wait waits for every goroutine started with Go.
func (e *Engine) Wait() { e.wg.Wait() }

func (e *Engine) requestBump(old idem.ID) { e.cfg.RequestBump(old) }

// backoff returns the wait before the n-th consecutive retry round:
// exponential from RetryBackoff with ±20% jitter so partitions do not retry
// in lockstep, then capped at 1s (or RetryBackoff when larger). The cap comes
// after the jitter, as in the Java producer's ExponentialBackoff: the cap is a
// bound the liveness checks rely on, not a centre to jitter around.
func (e *Engine) backoff(n int) time.Duration {
	base := e.cfg.RetryBackoff
	limit := max(time.Second, base)
	d := base << min(max(n-1, 0), 10)
	if d > limit || d <= 0 {
		d = limit
	}
	return min(time.Duration(float64(d)*(0.8+0.4*rand.Float64())), limit)
}

// getBuf returns a recycled batch buffer (or nil).
func (e *Engine) getBuf() []byte {
	if b, ok := e.bufs.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return nil
}

// putBuf recycles a batch buffer once nothing refers to it.
func (e *Engine) putBuf(b []byte) {
	if b == nil || cap(b) > 4<<20 {
		return
	}
	e.bufs.Put(&b)
}

func (e *Engine) getRecSlice() []*Pending {
	if s, ok := e.recSlices.Get().(*[]*Pending); ok {
		return (*s)[:0]
	}
	return make([]*Pending, 0, 16)
}

func (e *Engine) putRecSlice(s []*Pending) {
	if cap(s) > 4096 {
		return
	}
	clear(s)
	s = s[:0]
	e.recSlices.Put(&s)
}

// notifyAll delivers outcomes outside any lock. The engine's paths queue
// a partition's async outcomes before unlocking it (queueAsync), so what
// they pass here is sync outcomes and those HeldByBatch; async records
// still given (not from a partition: tests) go to their callback queues,
// run by cb's goroutine (a sink's) when given, else here. Every record's
// Async flag, size and error are read before anything is delivered: a
// woken waiter or a finished callback may reuse its Pending at once.
// Buffer space is released once for all synchronous
// records, before they are woken; async records release theirs just before
// their callbacks run (backpressure). Records that expired while their
// batch held them (HeldByBatch) had their outcome delivered already: only
// their buffer space is released here. inline is pushAsync's: true only on
// a connection reader (handle) and the reaper (ExpireAll).
func (e *Engine) notifyAll(recs []*Pending, cb *callbacks, inline bool) {
	var n, failed, nAsync, nHeld int
	var bytes int64
	var held []*Pending // rare: only after a delivery deadline passed in flight
	for _, r := range recs {
		isHeld := r.HeldByBatch()
		if r.Async && !isHeld {
			nAsync++
			continue
		}
		if isHeld {
			nHeld++
			held = append(held, r)
		}
		n++
		bytes += int64(r.Size)
		if r.Err != nil {
			failed++
		}
	}
	if n > 0 {
		e.cfg.Release(n, failed, bytes)
	}
	switch {
	case nAsync == 0 && nHeld == 0:
		for i, r := range recs {
			r.Done.Notify(r)
			yieldAfterWakes(i)
		}
	case nAsync == len(recs):
		e.pushAsync(recs, cb, inline)
	case nAsync == 0 && nHeld == len(recs):
	default: // a mix: split them
		var async []*Pending
		woken := 0
		if nAsync > 0 {
			async = make([]*Pending, 0, nAsync)
		}
		for _, r := range recs {
			switch {
			case r.HeldByBatch():
			case r.Async:
				async = append(async, r)
			default:
				r.Done.Notify(r)
				yieldAfterWakes(woken)
				woken++
			}
		}
		if len(async) > 0 {
			e.pushAsync(async, cb, inline)
		}
	}
	// Their batch is done with them; found before anything was delivered
	// (a delivered record may be reused at once).
	for _, r := range held {
		if h, ok := r.Done.(HeldReleaser); ok {
			h.ReleaseHeld(r)
		}
	}
}

// wakeBurst is how many synchronous waiters notifyAll wakes before it
// lets them run: a P's local run queue holds 256 goroutines, and waking
// more at once (a response for ~1,000 records at C=10,000) spills the rest
// to the global run queue, whose lock and cold goroutine list cost ~15% of
// the CPU there (issue 15, docs/internals.md).
const wakeBurst = 128

// yieldAfterWakes yields the processor after every wakeBurst-th waiter
// woken (i counts from 0); the caller holds no kpush lock but perhaps
// Sink.own, which only delays the next request meanwhile.
func yieldAfterWakes(i int) {
	if i%wakeBurst == wakeBurst-1 {
		runtime.Gosched()
	}
}

// notifyExpired delivers the outcomes of records that expired while a
// batch holds them (expireSent): their buffer space is released when the
// batch is done, not now. inline is pushAsync's (true only on the reaper).
func (e *Engine) notifyExpired(recs []*Pending, cb *callbacks, inline bool) {
	var async []*Pending
	for _, r := range recs {
		if r.Async {
			async = append(async, r)
			continue
		}
		r.Done.Notify(r)
	}
	if len(async) > 0 {
		e.pushAsync(async, cb, inline)
	}
}

// FailAll fails buffered records of the given partitions and closes them
// (Close): a later Add is refused. Engine goroutines must have exited.
func FailAll(parts []*PartitionQueue, err error) {
	for _, p := range parts {
		p.eng.notifyAll(p.failBuffered(err, true), nil, false)
	}
}

// FailBuffered fails the records of the given partitions that are not in
// flight (a fatal producer-level error); the partitions stay open.
func FailBuffered(parts []*PartitionQueue, err error) {
	for _, p := range parts {
		// failBuffered queued the async outcomes (on the leader's
		// callback goroutine): what is left is sync.
		p.eng.notifyAll(p.failBuffered(err, false), nil, false)
	}
}

// expiryErr is the cause for records whose delivery timeout passed; when
// the producer ID could not be obtained, that is the real reason.
func (e *Engine) expiryErr() error {
	if err := e.idem.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrDeliveryTimeout, err)
	}
	return ErrDeliveryTimeout
}

// expiryErrLocked is expiryErr for a record of p that was never sent: a
// partition waiting for a new epoch (phaseEpoch) whose bump keeps failing
// says so. p.mu is held.
func (p *PartitionQueue) expiryErrLocked() error {
	if p.phase == phaseEpoch {
		if err := p.eng.idem.BumpErr(); err != nil {
			return fmt.Errorf("%w: waiting for a new producer epoch: %w", ErrDeliveryTimeout, err)
		}
	}
	return p.eng.expiryErr()
}
