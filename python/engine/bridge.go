package main

// Goroutines and ownership (one bridge producer):
//   - The Python thread calling kp_send/kp_send_many (the event loop's, or
//     any thread of the blocking Producer) builds the records — their bytes
//     copied once, out of Python's buffers into Go memory — and appends them
//     to the intake list in one step per call. It never blocks.
//   - The intake goroutine (one per bridge producer) hands records to the
//     engine in the order kp_send saw them: modeSend records with
//     SendCancelable (a cancel handle, no goroutine per record), modeOrdered
//     ones with SendAsync. It may block for buffer space or a topic's first
//     metadata, bounded by ictx, which kp_cancel cancels when it targets the
//     record being handed over, and close when its timeout passes (then
//     aborted is set and the rest fail as closed). It exits when the
//     producer closes and the intake list is empty.
//   - The engine's callback goroutines push the outcomes (complete).
//   - Flush, close, partition and token goroutines are started per call.
// Locks (none nests another): b.imu guards intake, intakeClosed and items;
// b.cmu guards cur, ictx, icancel and every item's h and cancelReq;
// b.zmu guards zeroWaiters; b.tmu guards tokens; b.mmu guards manual. The
// completion queue has its own lock (queue.go).

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kpush/kpush"
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

	err       error             // set by kp_send_many (malformed headers): fail with it at hand-over
	h         *kpush.SendHandle // modeSend, once handed; guarded by b.cmu
	cancelReq bool              // kp_cancel came while intake was handing it over; guarded by b.cmu
}

// bridge is one producer as seen from Python.
type bridge struct {
	p       *kpush.Producer
	opts    []kpush.Option
	q       *queue
	cfg     *settings
	closed  atomic.Bool
	aborted atomic.Bool   // close's timeout passed: intake fails what is left
	stopped chan struct{} // closed when the intake goroutine has exited

	mmu    sync.Mutex
	manual *kpush.Producer // lazily created for records with an explicit partition

	imu          sync.Mutex
	intake       []*item
	intakeClosed bool
	wake         chan struct{}
	// items finds modeSend records by id for kp_cancel: inserted a batch at
	// a time by kp_send_many, deleted a batch at a time by kp_drain (which
	// sees every outcome), so the hot path takes imu twice per batch.
	items map[uint64]*item

	cmu     sync.Mutex
	cur     *item // the record intake is handing to the engine
	ictx    context.Context
	icancel context.CancelFunc

	outstanding atomic.Int64
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
		wake:    make(chan struct{}, 1),
		stopped: make(chan struct{}),
		tokens:  make(map[uint64]chan tokenReply),
		items:   make(map[uint64]*item),
	}
	b.ictx, b.icancel = context.WithCancel(context.Background())
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
	go b.intakeLoop()
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
	for _, it := range its {
		if it.mode == modeSend {
			b.items[it.id] = it
		}
	}
	b.intake = append(b.intake, its...)
	b.imu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return true
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

// intakeLoop hands records to the engine in order.
func (b *bridge) intakeLoop() {
	defer close(b.stopped)
	var batch []*item
	for {
		b.imu.Lock()
		batch, b.intake = b.intake, batch[:0]
		done := b.intakeClosed && len(batch) == 0
		b.imu.Unlock()
		if done {
			return
		}
		if len(batch) == 0 {
			<-b.wake
			continue
		}
		for i, it := range batch {
			batch[i] = nil
			b.handOver(it)
		}
	}
}

// handOver gives one record to the engine (intake goroutine).
func (b *bridge) handOver(it *item) {
	id, topic := it.id, it.rec.Topic
	if it.err != nil {
		b.complete(id, kpush.Result{}, it.err)
		return
	}
	if b.aborted.Load() {
		b.complete(id, kpush.Result{}, &kpush.ProduceError{Topic: topic, Partition: -1, Err: kpush.ErrClosed})
		return
	}
	if !it.state.CompareAndSwap(itemQueued, itemHanded) {
		b.complete(id, kpush.Result{}, &kpush.ProduceError{Topic: topic, Partition: -1, Err: errWithdrawn})
		return
	}
	partition := it.rec.Partition
	p, err := b.producerFor(partition)
	if err != nil {
		b.complete(id, kpush.Result{}, &kpush.ProduceError{Topic: topic, Partition: partition, Err: err})
		return
	}
	cb := func(res kpush.Result, err error) { b.complete(id, res, err) }
	b.cmu.Lock()
	b.cur = it
	ctx := b.ictx
	b.cmu.Unlock()
	if it.mode != modeSend {
		p.SendAsync(ctx, &it.rec, cb)
		b.cmu.Lock()
		b.cur = nil
		b.cmu.Unlock()
		return
	}
	h := p.SendCancelable(ctx, &it.rec, cb)
	b.cmu.Lock()
	b.cur = nil
	it.h = h
	req := it.cancelReq
	if b.ictx.Err() != nil && !b.aborted.Load() { // kp_cancel interrupted a wait for buffer space or metadata
		b.ictx, b.icancel = context.WithCancel(context.Background())
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
		if b.cur == it {
			b.icancel()
		}
	}
	b.cmu.Unlock()
	if h != nil {
		h.Cancel()
	}
}

// complete pushes a record's outcome and counts it done.
func (b *bridge) complete(id uint64, res kpush.Result, err error) {
	b.q.push(outcome(id, res, err))
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

// waitIdle waits until no record is outstanding (every outcome pushed).
func (b *bridge) waitIdle(ctx context.Context) error {
	b.zmu.Lock()
	if b.outstanding.Load() == 0 {
		b.zmu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	b.zeroWaiters = append(b.zeroWaiters, ch)
	b.zmu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func timeoutCtx(timeoutMS int64) (context.Context, context.CancelFunc) {
	if timeoutMS < 0 {
		return context.WithCancel(context.Background())
	}
	return context.WithTimeout(context.Background(), time.Duration(timeoutMS)*time.Millisecond)
}

// flush waits for every record accepted so far to have its outcome pushed.
func (b *bridge) flush(timeoutMS int64) error {
	if b.closed.Load() {
		return kpush.ErrClosed
	}
	ctx, cancel := timeoutCtx(timeoutMS)
	defer cancel()
	return b.waitIdle(ctx)
}

// close stops intake, closes the engine producers (bounded by the
// timeout; what is left fails) and waits for every outcome to be pushed.
func (b *bridge) close(timeoutMS int64) error {
	if !b.closed.CompareAndSwap(false, true) {
		return kpush.ErrClosed
	}
	b.imu.Lock()
	b.intakeClosed = true
	b.imu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	ctx, cancel := timeoutCtx(timeoutMS)
	defer cancel()
	select {
	case <-b.stopped:
	case <-ctx.Done():
		// Intake may be blocked on a full buffer (until a record's delivery
		// timeout): interrupt it and fail what it still holds.
		b.aborted.Store(true)
		b.cmu.Lock()
		b.icancel()
		b.cmu.Unlock()
		<-b.stopped
	}
	err := b.p.Close(ctx)
	b.mmu.Lock()
	m := b.manual
	b.mmu.Unlock()
	if m != nil {
		if err2 := m.Close(ctx); err == nil {
			err = err2
		}
	}
	// Close delivered every outcome (their callbacks pushed them).
	b.waitIdle(context.Background())
	b.tmu.Lock()
	for id, ch := range b.tokens {
		ch <- tokenReply{err: kpush.ErrClosed}
		delete(b.tokens, id)
	}
	b.tmu.Unlock()
	return err
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
