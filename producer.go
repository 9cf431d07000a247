package kpush

// Goroutines and ownership (root package):
//   - Callers' goroutines run Send/SendAsync: validate, reserve buffer space,
//     find the topic (atomic copy-on-write map), pick a partition, append to
//     that partition's queue under the partition's own lock.
//   - The metadata goroutine (meta.Refresher.Run) owns topic creation,
//     producer-ID loading and epoch bumps, and applies metadata (sinks,
//     leader changes). Connection readers may also move a partition (and
//     create its new leader's sink) from a KIP-951 leader hint; leader
//     changes hold p.leaderMu (leaders.go). Writers of p.topics and
//     p.sinks hold p.mu.
//   - The reaper goroutine fails records whose delivery timeout passed
//     while they could not be sent.
//   - Sink, connection-reader and callback goroutines: see internal/sink.
// Every goroutine is started through sink.Engine.Go and waited for by Close.

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/kpush/kpush/internal/batch"
	"github.com/kpush/kpush/internal/buffer"
	"github.com/kpush/kpush/internal/clock"
	"github.com/kpush/kpush/internal/idem"
	"github.com/kpush/kpush/internal/meta"
	"github.com/kpush/kpush/internal/partitioner"
	"github.com/kpush/kpush/internal/sink"
	"github.com/kpush/kpush/internal/wire"
)

// Producer sends records to Kafka. It is safe for concurrent use by any
// number of goroutines; create one per process and share it.
type Producer struct {
	cfg   config
	hooks hookSet // by kind, read-only after New (hooks.go)
	eng   *sink.Engine
	idem  *idem.Manager
	lim   *buffer.Limiter
	// undelivered counts accepted records whose outcome has not been
	// delivered yet, by generation: Flush and Close wait for the records
	// accepted before they were called.
	undelivered *buffer.Tracker
	ref         meta.Refresher

	topics atomic.Pointer[map[string]*topic] // copy-on-write; writers hold mu

	mu sync.Mutex // guards writes to topics, sinks, retired, bump
	// leaderMu serializes leader changes (metadata and KIP-951 hints) and
	// guards topic.epochs; taken before mu and partition locks (leaders.go).
	leaderMu sync.Mutex
	sinks    map[int32]*sink.Sink
	retired  map[string]*topic // topics dropped from metadata (topics.go)
	// topicIdle: a topic unused this long (nanoseconds) stops being asked
	// about (Java metadata.max.idle.ms, 5 min); atomic so tests can shorten it.
	topicIdle atomic.Int64
	bump      *idem.ID // a requested epoch bump, handled by the metadata goroutine
	// bumpReported is the last ID an OnEpochBump reported (metadata goroutine only).
	bumpReported idem.ID

	closed    atomic.Bool
	closing   chan struct{} // closed when Close starts
	closeOnce sync.Once
	closeErr  error

	sent, failed atomic.Int64
	clock        clock.Clock

	waiters sync.Pool // *syncWaiter
	asyncs  asyncSlabs

	// testHookFlushSealed, when set (tests only, before any Flush), runs in
	// Flush once the records it waits for are fixed.
	testHookFlushSealed func()
}

// New validates the options and returns a producer. It does not connect:
// the first record for a topic fetches metadata, so New never blocks.
func New(opts ...Option) (*Producer, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	hs, _ := newHookSet(cfg.hooks) // validate checked every hook
	p := &Producer{
		cfg:         cfg,
		hooks:       hs,
		idem:        idem.NewManager(cfg.idempotent),
		lim:         buffer.New(cfg.maxBufBytes, cfg.maxBufRecords),
		undelivered: buffer.NewTracker(),
		sinks:       make(map[int32]*sink.Sink),
		retired:     make(map[string]*topic),
		closing:     make(chan struct{}),
	}
	p.asyncs.init(p, cfg.maxBufRecords)
	empty := map[string]*topic{}
	p.topics.Store(&empty)
	p.topicIdle.Store(int64(defaultTopicIdle))
	wcfg := &wire.Config{
		ClientID:       cfg.clientID,
		DialTimeout:    cfg.dialTimeout,
		RequestTimeout: cfg.requestTimeout + 5*time.Second, // the broker's own timeout fires first
		TLS:            cfg.tls,
		SASL:           cfg.sasl,
		AuthHook:       p.authEvent,
		IdleTimeout:    cfg.connMaxIdle,
		OnIdleClose: func(addr string) {
			cfg.logger.Debug("kpush: closed idle broker connection", "addr", addr, "idle", cfg.connMaxIdle)
		},
		MaxVersions: map[int16]int16{0: 11}, // Produce v12+ adds nothing kpush uses; v13 needs topic IDs
		OnEvent:     p.wireEventHook(),
	}
	p.eng = sink.NewEngine(sink.Config{
		Acks:            int16(cfg.acks),
		MaxInflight:     cfg.maxInflight,
		MaxBatchBytes:   cfg.maxBatchBytes,
		MaxRequestBytes: cfg.maxRequestBytes,
		Codec:           batch.Codec(cfg.compression),
		Linger:          cfg.linger,
		CoalesceBytes:   cfg.coalesceBytes,
		CoalesceMaxWait: cfg.coalesceMaxWait,
		RequestTimeout:  cfg.requestTimeout,
		RetryBackoff:    cfg.retryBackoff,
		Wire:            wcfg,
		Logger:          cfg.logger,
		TriggerMetadata: p.triggerMetadata,
		RequestBump:     p.requestBump,
		Release:         p.release,
		ReleaseCanceled: p.releaseCanceled,
		Hooks:           p.engineHooks(),
	}, p.idem)
	p.eng.SetLeaderHints(p.applyLeaderHints)
	p.ref = meta.Refresher{
		Fetcher:     meta.NewFetcher(wcfg, cfg.brokers),
		Interval:    cfg.metadataMaxAge,
		MinInterval: cfg.retryBackoff,
		Timeout:     cfg.requestTimeout,
		Topics:      p.topicNames,
		Apply:       p.applyMetadata,
		OnIdle:      p.controlRequests,
		Go:          p.eng.Go,
	}
	p.ref.Init()
	p.eng.Go(func() { p.ref.Run(p.eng.Stopping()) })
	p.eng.Go(p.reap)
	return p, nil
}

// syncWaiter is a Send call's record and its wake-up channel; pooled.
type syncWaiter struct {
	pend sink.Pending
	ch   chan struct{}
	prod *Producer
	part *sink.PartitionQueue // where enqueue put pend
	gen  *buffer.Gen          // the record's Flush generation
	load *partitioner.Counter // its partition's load (partitioner.go)
	hk   *hookedRec           // with record hooks: kpush's copy of the record (hooks_engine.go)
}

// Notify implements sink.Notifier; it runs on the goroutine that learned
// the outcome.
func (w *syncWaiter) Notify(*sink.Pending) {
	takeLoad(&w.load, w.pend.Size)
	w.gen.Done()
	w.ch <- struct{}{}
}

// release returns the buffer space of records with outcomes and counts
// them; the engine calls it once per batch of outcomes.
func (p *Producer) release(n, failed int, bytes int64) {
	p.lim.ReleaseN(int64(n), bytes)
	if n > failed {
		p.sent.Add(int64(n - failed))
	}
	if failed > 0 {
		p.failed.Add(int64(failed))
	}
}

// releaseCanceled returns the buffer space of canceled records once their
// partition dropped them (their Send already counted them failed).
func (p *Producer) releaseCanceled(n int, bytes int64) { p.lim.ReleaseN(int64(n), bytes) }

func (p *Producer) outcome(pd *sink.Pending) (Result, error) {
	if pd.Err != nil {
		return Result{}, &ProduceError{Topic: pd.Topic, Partition: pd.Partition, Unknown: pd.Unknown, Err: publicCause(pd.Err)}
	}
	return Result{Topic: pd.Topic, Partition: pd.Partition, Offset: pd.Offset, Timestamp: time.UnixMilli(pd.Rec.TimestampMs)}, nil
}

// Send produces one record and waits for its outcome: the broker's
// acknowledgement (with AcksAll, every in-sync replica has it) or an error.
//
// Every error is a *ProduceError matching ErrNotWritten or
// ErrOutcomeUnknown. If ctx ends before the record was sent, the record is
// withdrawn and Send returns ctx's error as ErrNotWritten; if ctx ends while
// the record is in flight, Send returns at once with ErrOutcomeUnknown and
// the record's eventual outcome is discarded. Send waits for buffer space
// (or fails with ErrBufferFull under WithFailFastWhenFull) and, for the
// first record of a topic, for the topic's metadata.
func (p *Producer) Send(ctx context.Context, r *Record) (Result, error) {
	// One call, so that Send inlines into its caller: with the hook check
	// here, it did not, and copying its results cost about as much as
	// every hook check on the path together (pprof, BenchmarkSend C=1000).
	return p.send(ctx, r, nil)
}

// send is Send. hw is nil from Send, which sends through sendHooked when
// record hooks are installed; from sendHooked, hw is the waiter whose copy
// of the record r is (hookedRec), and send runs the OnRecordDone hooks
// before the waiter can be reused. A separate parameter, so that r does
// not escape without hooks.
func (p *Producer) send(ctx context.Context, r *Record, hw *syncWaiter) (Result, error) {
	if hw == nil && p.hooks.anyRecord && r != nil {
		return p.sendHooked(ctx, r)
	}
	mono, wall := p.clock.Now() // the deadline counts from here (enqueue)
	w := hw
	if w == nil {
		w, _ = p.waiters.Get().(*syncWaiter)
		if w == nil {
			w = p.newWaiter()
		}
	} else {
		w.pend.Stamps = &w.hk.stamps
	}
	w.pend.Reset()
	w.pend.Size = 0 // set by enqueue once buffered; RecordDoneEvent.Bytes
	done := ctx.Done()
	// Nothing can interrupt the wait: the engine may let this goroutine
	// read its own response (sink.Sink.kick).
	w.pend.OwnRead = done == nil
	if err := p.enqueue(ctx, r, &w.pend, w, &w.gen, mono, wall, false); err != nil {
		p.failed.Add(1) // before user code (OnRecordDone), which may panic
		if hw != nil {
			p.recordDone(w.hk, w.pend.Size, nil, Result{}, err)
		}
		p.waiters.Put(w)
		return Result{}, err
	}
	if done == nil {
		<-w.ch // a plain receive costs far less than a select
	} else {
		select {
		case <-w.ch:
		case <-done:
			if gaveUp, err := p.cancelWait(ctx, w); gaveUp {
				// w is never reused: the engine may still write
				// w.pend, so no stamps.
				if hw != nil {
					p.recordDone(w.hk, w.pend.Size, nil, Result{}, err)
				}
				return Result{}, err
			}
		}
	}
	res, err := p.outcome(&w.pend)
	if hw != nil {
		p.recordDone(w.hk, w.pend.Size, w.pend.Stamps, res, err)
	}
	if !w.pend.HeldByBatch() { // else a batch still refers to it
		p.waiters.Put(w)
	}
	return res, err
}

// cancelWait handles ctx ending while Send waits. It reports whether Send
// gives up (with err); false means the outcome arrived meanwhile and Send
// takes it as usual.
func (p *Producer) cancelWait(ctx context.Context, w *syncWaiter) (gaveUp bool, err error) {
	pd := &w.pend
	if w.part.Cancel(pd) {
		// Never sent: the partition drops it and only then releases its
		// buffer space (releaseCanceled), so the memory bound holds; w is
		// not reused because the partition's queue may still point at it.
		p.failed.Add(1)
		takeLoad(&w.load, pd.Size)
		w.gen.Done()
		return true, notWritten(pd.Topic, pd.Partition, ctx.Err())
	}
	if pd.TryAbandon() {
		// The record is still in flight and its Notify still runs (on the
		// reader goroutine, with no ordering against this one): Notify
		// alone takes its load off, when its batch is done.
		return true, &ProduceError{Topic: pd.Topic, Partition: pd.Partition, Unknown: true, Err: ctx.Err()}
	}
	<-w.ch
	return false, nil
}

// enqueue validates r, reserves buffer space and appends it to its
// partition, storing the record's Flush generation in *gen (before the
// record can have an outcome). Errors are *ProduceError, definite, except
// errWouldWait: with try set, enqueue never waits, and when the topic's
// metadata or buffer space is not there yet it returns errWouldWait having
// taken nothing (TrySendCancelable). mono and wall are the clock
// (p.clock.Now) read when Send, SendAsync or SendCancelable was called,
// before anything that can wait (a contended slab lock, hooks): the
// delivery deadline counts from the call (WithDeliveryTimeout), and the
// record's default timestamp is the call's.
func (p *Producer) enqueue(ctx context.Context, r *Record, pd *sink.Pending, n sink.Notifier, gen **buffer.Gen, mono, wall int64, try bool) error {
	var ad admitted
	if err := p.admit(ctx, r, &ad, mono, wall, try); err != nil {
		return err
	}
	return p.add(&ad, pd, n, gen)
}

// admitted is a record that passed admit: valid, its partition chosen and
// its buffer space reserved. add either queues it or gives the space back.
type admitted struct {
	rec      batch.Record
	name     string
	t        *topic
	q        *sink.PartitionQueue // partition part's queue
	part     int
	size     int
	mono     int64 // when the send was called (clock.Mono)
	deadline int64
	waited   bool // admit waited (metadata, buffer space) or ran user code (a custom partitioner)
}

// admit is enqueue's first half: it validates r, finds its topic and
// partition and reserves its buffer space, filling in *ad. SendAsync
// picks its record's memory by the partition between the two halves
// (asyncSlabs.get). Errors are *ProduceError, definite, or errWouldWait
// (try, as enqueue's); on error nothing is reserved. mono and wall: as
// enqueue's.
func (p *Producer) admit(ctx context.Context, r *Record, ad *admitted, mono, wall int64, try bool) error {
	if r == nil {
		return notWritten("", -1, ErrNilRecord)
	}
	name := r.Topic
	if name == "" {
		name = p.cfg.defaultTopic
	}
	if name == "" {
		return notWritten("", -1, ErrNoTopic)
	}
	if p.closed.Load() {
		return notWritten(name, -1, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return notWritten(name, -1, err)
	}

	tsMs := wall / int64(time.Millisecond)
	if !r.Timestamp.IsZero() {
		if tsMs = r.Timestamp.UnixMilli(); tsMs < 0 {
			return notWritten(name, -1, ErrInvalidTimestamp)
		}
	}
	for i := range r.Headers {
		if !utf8.ValidString(r.Headers[i].Key) {
			return notWritten(name, -1, fmt.Errorf("%w: key %q is not UTF-8", ErrInvalidHeader, r.Headers[i].Key))
		}
	}
	// Field by field (all four; *ad is the callers' zero value): a literal's stack
	// temporary, read in 16-byte loads behind 8-byte stores, stalled each record.
	ad.rec.Key, ad.rec.Value, ad.rec.TimestampMs = r.Key, r.Value, tsMs
	ad.rec.Headers = engineHeaders(r.Headers)
	size := batch.RecordSize(&ad.rec)
	if size+batch.BatchOverhead > p.cfg.maxBatchBytes {
		return notWritten(name, -1, &RecordTooLargeError{Size: int64(size), Limit: int64(p.cfg.maxBatchBytes - batch.BatchOverhead), Option: "WithMaxBatchBytes"})
	}
	if int64(size) > p.cfg.maxBufBytes {
		// The limiter would admit it only once the buffer is empty
		// (holding up every sender queued behind it, then exceeding the
		// bound); like Java's buffer.memory, the bound is hard instead.
		return notWritten(name, -1, &RecordTooLargeError{Size: int64(size), Limit: p.cfg.maxBufBytes, Option: "WithMaxBufferedBytes"})
	}

	t, waited, err := p.topic(ctx, name, mono, try)
	if err == errWouldWait {
		return err
	}
	if err != nil {
		return notWritten(name, -1, err)
	}
	parts := *t.parts.Load()
	// With try, space is taken before a partition is chosen: a refused
	// record must not have moved the partitioner (sticky byte counts,
	// round robin). Without it, a record that fails fast still has one.
	reserved := false
	if try {
		if reserved = p.lim.TryReserve(int64(size)); !reserved && !p.cfg.failFast {
			return errWouldWait
		}
	}
	part, bad, err := pickUndoing(p, t.picker, r, size, len(parts), reserved)
	if err != nil {
		if reserved {
			p.lim.Release(int64(size))
		}
		return notWritten(name, bad, err)
	}

	deadline := mono + int64(p.cfg.deliveryTimeout)
	if !reserved && !p.lim.TryReserve(int64(size)) {
		if p.cfg.failFast {
			return notWritten(name, int32(part), ErrBufferFull)
		}
		if try {
			return errWouldWait
		}
		if err := p.reserve(ctx, int64(size), deadline); err != nil {
			return notWritten(name, int32(part), err)
		}
		waited = true
	}
	_, custom := t.picker.(*customPicker)
	ad.name, ad.t, ad.q, ad.part, ad.size, ad.mono, ad.deadline = name, t, parts[part], part, size, mono, deadline
	ad.waited = waited || custom
	return nil
}

// add is enqueue's second half: it appends the admitted record, as pd
// with notifier n, to its partition and stores its Flush generation in
// *gen. It fails (ErrClosed, definite) only when Close closed the
// partition first; the record's buffer space is then given back.
func (p *Producer) add(ad *admitted, pd *sink.Pending, n sink.Notifier, gen **buffer.Gen) error {
	name, part, size, q := ad.name, ad.part, ad.size, ad.q
	pd.Rec = ad.rec
	pd.Topic = name
	pd.Partition = int32(part)
	pd.Size = int32(size)
	pd.Enqueued = ad.mono
	pd.Deadline = ad.deadline
	pd.Done = n
	*gen = p.undelivered.Add()
	if p.closed.Load() {
		// Close began after admit's check and may have sealed what it
		// waits for before this Add: it would not wait for the record,
		// which could then be in flight when the sinks stop (outcome
		// unknown). Close stores closed before sealing, so an Add it
		// missed sees closed here.
		p.lim.Release(int64(size))
		(*gen).Done()
		return notWritten(name, int32(part), ErrClosed)
	}
	load := addLoad(ad.t.picker.Counter(part), pd.Size)
	switch w := n.(type) {
	case *syncWaiter:
		w.part = q // a canceled Send withdraws its record there
		w.load = load
	case *asyncRecord:
		w.load = load
	case *SendHandle:
		// Before Add: neither Notify nor Cancel can run yet.
		w.part, w.load = q, load
	}
	if p.hooks.anyRecord { // before Add: the record may be done as soon as it is queued
		if pd.Stamps != nil { // kpush's copy of the record holds them (hookedRec)
			// The Buffer stage ends now. Without a wait (metadata, buffer
			// space) or user code (a custom partitioner) since mono, only
			// validation and a built-in partitioner's pick (well under a
			// microsecond) came between: mono does, and saves a clock read.
			// SendAsync and SendCancelable read mono before the hooks'
			// start (before the slab lock and OnRecordSend): read again.
			at := ad.mono
			if ad.waited || pd.Async {
				at = clock.Mono()
			}
			*pd.Stamps = sink.Stamps{Buffered: at}
		}
		if len(p.hooks.buffered) > 0 {
			// User code, before the record is queued: if it panics, the
			// panic goes on to the caller with nothing kept (generation,
			// load, buffer space), and the record counted failed.
			ran := false
			defer func() {
				if !ran {
					p.failed.Add(1)
					addLoad(load, -pd.Size)
					p.lim.Release(int64(size))
					(*gen).Done()
				}
			}()
			p.recordBuffered(hookedRecord(n), name, pd.Partition, size)
			ran = true
		}
	}
	if !q.Add(pd) { // Close got there first
		addLoad(load, -pd.Size)
		p.lim.Release(int64(size))
		(*gen).Done()
		return notWritten(name, int32(part), ErrClosed)
	}
	if ad.t.leaderless.Load() { // no sink will ask for metadata (refreshes back off)
		p.ref.Trigger()
	}
	return nil
}

// reserve waits for buffer space, bounded by ctx, Close and the record's
// delivery deadline (the time from Send to an outcome includes this wait).
func (p *Producer) reserve(ctx context.Context, size, deadline int64) error {
	wait := time.Duration(deadline - clock.Mono())
	if wait <= 0 {
		return ErrDeliveryTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	err := p.lim.Reserve(rctx, size, p.closing, ErrClosed)
	if err != nil && ctx.Err() == nil && rctx.Err() != nil {
		return fmt.Errorf("%w: waiting for buffer space", ErrDeliveryTimeout)
	}
	return err
}

// reapSlack is how late, at most, the reaper delivers an outcome after its
// record's delivery deadline on an unloaded machine (timer and scheduling
// latency; documented in WithDeliveryTimeout).
const reapSlack = 100 * time.Millisecond

// reap fails records whose delivery deadline passed: buffered ones
// definitely, ones in a batch in flight or awaiting a retry as outcome
// unknown (sink.Engine.Reap). It sleeps until the earliest deadline it
// knows, and at most a quarter of the delivery timeout (capped at 1s), so
// a record buffered after a scan is seen before its own deadline.
func (p *Producer) reap() {
	maxWait := min(time.Second, p.cfg.deliveryTimeout/4)
	p.eng.Reap(func() ([]*sink.PartitionQueue, []*sink.Sink) {
		return p.allPartitions(), p.sinkList()
	}, maxWait)
}

// sinkList returns every sink.
func (p *Producer) sinkList() []*sink.Sink {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*sink.Sink, 0, len(p.sinks))
	for _, s := range p.sinks {
		out = append(out, s)
	}
	return out
}
