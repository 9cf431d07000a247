package main

// Goroutines and ownership (one bridge producer):
//   - The Python thread calling kp_send_many (the event loop's) builds the
//     records — their bytes copied once, out of Python's buffers into Go
//     memory — and appends them to their topics' intake lanes in one step
//     per call. It never blocks.
//   - One intake goroutine per topic (a lane, started at the topic's first
//     record) hands its records to the engine in the order kp_send_many saw
//     them: modeSend records with SendCancelable (a cancel handle, no
//     goroutine per record), modeOrdered ones with SendAsync. It may block
//     for buffer space or the topic's first metadata, bounded by the lane's
//     ictx, which kp_cancel cancels when it targets the record being handed
//     over, and close when its timeout passes (then aborted is set and the
//     rest fail as closed). A lane per topic, not one for the producer: a
//     topic whose metadata is slow or failing must not hold up the records
//     of the others (per-key order is within a topic). It exits when the
//     producer closes and its intake list is empty.
//   - The engine's callback goroutines push the outcomes (complete).
//   - Flush, close, partition and token goroutines are started per call.
// Locks (none nests another): b.imu guards lanes, every lane's intake,
// intakeClosed and items; b.cmu guards every lane's cur, ictx and icancel
// and every item's h and cancelReq;
// b.zmu guards zeroWaiters; b.tmu guards tokens; b.mmu guards manual. The
// completion queue has its own lock (queue.go).

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/internal/buffer"
)

// Send modes, shared with kpush/_ffi.py.
const (
	modeSend    = 0 // SendCancelable: cancellation withdraws the record or drops its outcome
	modeOrdered = 1 // SendAsync: cancellation withdraws only before intake
)

// Item states for modeOrdered.
const (
	itemQueued = iota
	itemHanded
	itemWithdrawn
)

// errWithdrawn is the cause of a modeOrdered record cancelled before the
// intake goroutine handed it to the engine.
var errWithdrawn = fmt.Errorf("kpush: send cancelled before the record was buffered: %w", context.Canceled)

// item is one record between kp_send and its outcome.
type item struct {
	id    uint64
	rec   kpush.Record
	mode  int32
	state atomic.Int32 // itemQueued → itemHanded (intake) or itemWithdrawn (kp_cancel)

	lane      *lane             // set under b.imu by sendMany
	gen       *buffer.Gen       // flush generation, set by sendMany; Done once its outcome is pushed
	err       error             // set by kp_send_many (malformed headers): fail with it at hand-over
	h         *kpush.SendHandle // modeSend, once handed; guarded by b.cmu
	cancelReq bool              // kp_cancel came while intake was handing it over; guarded by b.cmu
}

// lane hands one topic's records to the engine, in order. Its records are
// handed over by its intake goroutine, or one at a time by kp_send_many on
// the caller's thread (sendMany: a lone record on an idle lane). Lane
// states, both flags guarded by b.imu: idle (neither set, intake empty),
// handing (the goroutine holds a batch taken from intake), inline (the
// caller's thread is handing one record over; the goroutine takes nothing
// meanwhile, and the caller pokes it when done). inline is set only from
// idle, so the two never overlap and records keep their order.
type lane struct {
	intake  []*item         // guarded by b.imu
	handing bool            // guarded by b.imu
	inline  bool            // guarded by b.imu
	wake    chan struct{}   // buffered 1: intake went non-empty, an inline hand-over ended, or close
	cur     *item           // the record being handed over; guarded by b.cmu
	ictx    context.Context // bounds the hand-over's waits; guarded by b.cmu
	icancel context.CancelFunc
}

// bridge is one producer as seen from Python.
type bridge struct {
	p       *kpush.Producer
	opts    []kpush.Option
	q       *queue
	cfg     *settings
	closed  atomic.Bool
	aborted atomic.Bool    // close's timeout passed: intake fails what is left
	lanesWG sync.WaitGroup // one per lane goroutine

	mmu    sync.Mutex
	manual *kpush.Producer // lazily created for records with an explicit partition

	imu          sync.Mutex
	lanes        map[string]*lane // by topic; only added to, while intake is open
	intakeClosed bool
	// items finds modeSend records by id for kp_cancel: inserted a batch at
	// a time by kp_send_many, deleted a batch at a time by kp_drain (which
	// sees every outcome), so the hot path takes imu twice per batch.
	items map[uint64]*item

	cmu sync.Mutex

	// outstanding counts every record without a pushed outcome (close
	// waits for zero); undelivered counts them by generation, so a flush
	// waits only for the records sent before it (as the Go Flush).
	outstanding atomic.Int64
	undelivered *buffer.Tracker
	zmu         sync.Mutex
	zeroWaiters []chan struct{}

	tmu      sync.Mutex
	tokenSeq uint64
	tokens   map[uint64]chan tokenReply
}

type tokenReply struct {
	token string
	err   error
}

func newBridge(raw []byte) (*bridge, error) {
	b := &bridge{
		tokens: make(map[uint64]chan tokenReply),
		items:  make(map[uint64]*item),
		lanes:  make(map[string]*lane),

		undelivered: buffer.NewTracker(),
	}
	cfg, opts, _, _, err := parseConfig(raw, b.token)
	if err != nil {
		return nil, err
	}
	b.cfg, b.opts = cfg, opts
	if b.p, err = kpush.New(opts...); err != nil {
		return nil, err
	}
	if b.q, err = newQueue(); err != nil {
		b.p.Close(context.Background())
		return nil, err
	}
	return b, nil
}

// producerFor returns the engine producer for a record: the main one, or
// (for an explicit partition) a second one with ManualPartitioner, because
// kpush's partitioner is chosen per producer, not per record.
func (b *bridge) producerFor(partition int32) (*kpush.Producer, error) {
	if partition < 0 {
		return b.p, nil
	}
	b.mmu.Lock()
	defer b.mmu.Unlock()
	if b.manual == nil {
		opts := append(append([]kpush.Option{}, b.opts...), kpush.WithPartitioner(kpush.ManualPartitioner))
		m, err := kpush.New(opts...)
		if err != nil {
			return nil, err
		}
		b.manual = m
	}
	return b.manual, nil
}

// sendMany starts records in order. It never blocks on the network or on
// buffer space: the intake goroutine hands them to the engine. It returns
// false, starting none, once close has stopped intake: kp_send_many checks
// b.closed before copying the batch, and a close beginning during the copy
// must neither strand the batch in an intake list no goroutine reads (close
// would wait for its outcomes forever) nor see it counted after its own
// wait for outcomes. Counting under imu orders both with intakeClosed.
func (b *bridge) sendMany(its []*item) bool {
	b.imu.Lock()
	if b.intakeClosed {
		b.imu.Unlock()
		return false
	}
	b.outstanding.Add(int64(len(its)))
	if len(its) == 1 && b.inlineLocked(its[0]) {
		return true
	}
	var l *lane
	var lt string
	var woken []*lane // usually one: a tick's records mostly share a topic
	for _, it := range its {
		if it.mode == modeSend {
			b.items[it.id] = it
		}
		if l == nil || it.rec.Topic != lt { // topicString shares one string per run of a topic
			lt = it.rec.Topic
			l = b.laneLocked(lt)
			if !slices.Contains(woken, l) {
				woken = append(woken, l)
			}
		}
		it.lane = l
		it.gen = b.undelivered.Add()
		l.intake = append(l.intake, it)
	}
	b.imu.Unlock()
	for _, l := range woken {
		l.poke()
	}
	return true
}

// inlineLocked hands a lone record over on the caller's thread when its
// lane is idle (called with b.imu held; it releases it when it reports
// true): TrySendCancelable writes the request itself if the broker's sink
// is idle and delivers the outcome from the connection's reader, so at
// C=1 a record crosses no goroutine of the bridge or the sink on its way
// out, and only the reader on its way back. Only a plain awaited send
// qualifies (modeSend, no explicit partition, no header error); if the
// engine would wait (first metadata, buffer space), the record joins the
// intake list as sendMany would have queued it.
func (b *bridge) inlineLocked(it *item) bool {
	if it.mode != modeSend || it.err != nil || it.rec.Partition >= 0 || b.aborted.Load() {
		return false
	}
	l := b.laneLocked(it.rec.Topic)
	if l.handing || l.inline || len(l.intake) > 0 {
		return false
	}
	l.inline = true
	b.items[it.id] = it
	it.lane = l
	it.gen = b.undelivered.Add()
	b.imu.Unlock()

	queued := !b.tryHandOver(it)
	b.imu.Lock()
	l.inline = false
	if queued {
		// At the head: a kp_send_many call (another thread's) that came
		// while this one was inline found the lane busy and appended its
		// records behind; they were called after this one, so they go
		// after it (order per partition follows call order).
		l.intake = slices.Insert(l.intake, 0, it)
	}
	poke := len(l.intake) > 0 || b.intakeClosed
	b.imu.Unlock()
	if poke {
		l.poke()
	}
	return true
}

// tryHandOver is handOver without waiting, on kp_send_many's thread; false
// when the engine would wait (the record is still queued, untouched).
func (b *bridge) tryHandOver(it *item) bool {
	if !it.state.CompareAndSwap(itemQueued, itemHanded) {
		return false // withdrawn meanwhile: intake completes it
	}
	if stageOn {
		stamp(it.id, stTryIn, monoNow())
	}
	h, ok := b.p.TrySendCancelable(&it.rec, func(res kpush.Result, err error) { b.complete(it, res, err) })
	if testHookTried != nil {
		testHookTried(it, ok)
	}
	b.cmu.Lock()
	if !ok {
		// A kp_cancel that came meanwhile found it handed, without a
		// handle, and left cancelReq: withdraw it now (intake completes
		// it as withdrawn) instead of queueing it to be sent after all.
		if it.cancelReq {
			it.state.Store(itemWithdrawn)
		} else {
			it.state.Store(itemQueued)
		}
		b.cmu.Unlock()
		return false
	}
	it.h = h
	req := it.cancelReq
	b.cmu.Unlock()
	if req {
		h.Cancel()
	}
	return true
}

// testHookTried, when set (tests only), runs right after
// TrySendCancelable returns in tryHandOver, with the lane inline: a test
// makes a kp_send_many or kp_cancel call land inside the hand-over.
var testHookTried func(it *item, ok bool)

// laneLocked returns topic's lane, starting it at the topic's first record
// (b.imu held, intake open).
func (b *bridge) laneLocked(topic string) *lane {
	l := b.lanes[topic]
	if l == nil {
		l = &lane{wake: make(chan struct{}, 1)}
		l.ictx, l.icancel = context.WithCancel(context.Background())
		b.lanes[topic] = l
		b.lanesWG.Add(1)
		go b.intakeLoop(l)
	}
	return l
}

func (l *lane) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// forget drops finished records from items (kp_drain, for each drained
// record outcome).
func (b *bridge) forget(ids []uint64) {
	b.imu.Lock()
	for _, id := range ids {
		delete(b.items, id)
	}
	b.imu.Unlock()
}

// intakeLoop hands a lane's records to the engine in order.
func (b *bridge) intakeLoop(l *lane) {
	defer b.lanesWG.Done()
	var batch []*item
	for {
		b.imu.Lock()
		if l.inline { // the caller's thread is handing a record over: it pokes when done
			b.imu.Unlock()
			<-l.wake
			continue
		}
		batch, l.intake = l.intake, batch[:0]
		l.handing = len(batch) > 0
		done := b.intakeClosed && len(batch) == 0
		b.imu.Unlock()
		if done {
			return
		}
		if len(batch) == 0 {
			<-l.wake
			continue
		}
		for i, it := range batch {
			batch[i] = nil
			b.handOver(l, it)
		}
	}
}

// handOver gives one record to the engine (intake goroutine).
func (b *bridge) handOver(l *lane, it *item) {
	topic := it.rec.Topic
	if it.err != nil {
		b.complete(it, kpush.Result{}, it.err)
		return
	}
	if b.aborted.Load() {
		b.complete(it, kpush.Result{}, &kpush.ProduceError{Topic: topic, Partition: -1, Err: kpush.ErrClosed})
		return
	}
	partition := it.rec.Partition
	p, err := b.producerFor(partition)
	if err != nil {
		b.complete(it, kpush.Result{}, &kpush.ProduceError{Topic: topic, Partition: partition, Err: err})
		return
	}
	cb := func(res kpush.Result, err error) { b.complete(it, res, err) }
	// Taken over and made current in one cmu section: a kp_cancel that
	// finds the record taken over then sees it current (and interrupts the
	// wait) or with its handle, never in between, where its request would
	// wait until the hand-over's wait for buffer space or metadata ended.
	b.cmu.Lock()
	if !it.state.CompareAndSwap(itemQueued, itemHanded) {
		b.cmu.Unlock()
		b.complete(it, kpush.Result{}, &kpush.ProduceError{Topic: topic, Partition: -1, Err: errWithdrawn})
		return
	}
	l.cur = it
	ctx := l.ictx
	b.cmu.Unlock()
	if it.mode != modeSend {
		p.SendAsync(ctx, &it.rec, cb)
		b.cmu.Lock()
		l.cur = nil
		b.cmu.Unlock()
		return
	}
	h := p.SendCancelable(ctx, &it.rec, cb)
	b.cmu.Lock()
	l.cur = nil
	it.h = h
	req := it.cancelReq
	if l.ictx.Err() != nil && !b.aborted.Load() { // kp_cancel interrupted a wait for buffer space or metadata
		l.ictx, l.icancel = context.WithCancel(context.Background())
	}
	b.cmu.Unlock()
	if req {
		h.Cancel()
	}
}

// cancelRecord withdraws or abandons a modeSend record whose Python future
// was cancelled: not yet handed over, it is withdrawn here; being handed
// over, the intake's wait is interrupted (or the handle cancelled right
// after); handed over, its handle is cancelled (SendCancelable's Cancel).
func (b *bridge) cancelRecord(id uint64) {
	b.imu.Lock()
	it := b.items[id]
	b.imu.Unlock()
	if it == nil || it.state.CompareAndSwap(itemQueued, itemWithdrawn) {
		return
	}
	b.cmu.Lock()
	h := it.h
	if h == nil {
		it.cancelReq = true
		if it.lane.cur == it {
			it.lane.icancel()
		}
	}
	b.cmu.Unlock()
	if h != nil {
		h.Cancel()
	}
}

// complete pushes a record's outcome and counts it done (after the push:
// a flush or close completion must follow the outcomes it waited for).
func (b *bridge) complete(it *item, res kpush.Result, err error) {
	b.q.push(outcome(it.id, res, err))
	if it.gen != nil {
		it.gen.Done()
	}
	if b.outstanding.Add(-1) == 0 {
		b.zmu.Lock()
		if b.outstanding.Load() == 0 {
			for _, ch := range b.zeroWaiters {
				close(ch)
			}
			b.zeroWaiters = nil
		}
		b.zmu.Unlock()
	}
}

// token asks Python for an OAUTHBEARER token through the completion queue
// and waits for kp_token's answer: Go never calls into Python.
func (b *bridge) token(ctx context.Context) (string, error) {
	ch := make(chan tokenReply, 1)
	b.tmu.Lock()
	if b.closed.Load() {
		b.tmu.Unlock()
		return "", kpush.ErrClosed
	}
	b.tokenSeq++
	id := b.tokenSeq
	b.tokens[id] = ch
	b.tmu.Unlock()
	b.q.push(completion{id: id, kind: kindToken})
	select {
	case r := <-ch:
		return r.token, r.err
	case <-ctx.Done():
		b.tmu.Lock()
		delete(b.tokens, id)
		b.tmu.Unlock()
		return "", ctx.Err()
	}
}

func (b *bridge) provideToken(id uint64, tok string, errMsg string) {
	b.tmu.Lock()
	ch := b.tokens[id]
	delete(b.tokens, id)
	b.tmu.Unlock()
	if ch == nil {
		return
	}
	r := tokenReply{token: tok}
	if errMsg != "" {
		r.err = errors.New(errMsg)
	}
	ch <- r
}

// parseHeaders decodes the header blob kpush/_ffi.py packs: per header a
// little-endian uint32 key length, the key, an int32 value length (-1 for
// null) and the value. blob is already Go memory; values alias it.
func parseHeaders(blob []byte, n int) ([]kpush.Header, error) {
	if n == 0 {
		return nil, nil
	}
	hs := make([]kpush.Header, 0, n)
	for len(blob) > 0 {
		if len(blob) < 4 {
			return nil, errors.New("kpush: malformed header blob")
		}
		kl := int(binary.LittleEndian.Uint32(blob))
		blob = blob[4:]
		if len(blob) < kl+4 {
			return nil, errors.New("kpush: malformed header blob")
		}
		h := kpush.Header{Key: string(blob[:kl])}
		blob = blob[kl:]
		vl := int(int32(binary.LittleEndian.Uint32(blob)))
		blob = blob[4:]
		if vl >= 0 {
			if len(blob) < vl {
				return nil, errors.New("kpush: malformed header blob")
			}
			h.Value = blob[:vl:vl]
			blob = blob[vl:]
		}
		hs = append(hs, h)
	}
	return hs, nil
}
