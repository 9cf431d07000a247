package main

// Goroutines and ownership (one bridge producer):
//   - The Python thread calling kp_send (the event loop's, or any thread of
//     the blocking Producer) builds the record — its bytes copied once, out
//     of Python's buffers into Go memory — and either starts a send
//     goroutine (modeSend) or appends to the intake list (modeOrdered).
//   - Send workers run modeSend records: each calls kpush.Producer.Send with
//     the record's own context, so cancelling that context withdraws a
//     buffered record or drops an in-flight outcome exactly as Send
//     documents; it pushes the outcome and takes the next record from
//     b.work, or exits after workerIdle or when the bridge closes. There
//     are as many as records awaited at once (recently).
//   - The intake goroutine (one per bridge producer) hands modeOrdered
//     records to SendAsync in the order kp_send saw them; SendAsync's
//     callbacks (engine goroutines) push the outcomes. It exits when the
//     producer closes and the intake list is empty.
//   - Flush, close, partition and token goroutines are started per call.
// Locks (none nests another): b.imu guards intake and intakeClosed;
// b.zmu guards zeroWaiters; b.tmu guards tokens;
// b.mmu guards manual. The completion queue has its own lock (queue.go).

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
	modeSend    = 0 // Send in a goroutine: cancellation withdraws the record
	modeOrdered = 1 // SendAsync in call order: cancellation withdraws only before intake
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
	id     uint64
	rec    kpush.Record
	cancel context.CancelFunc // modeSend
	ctx    context.Context    // modeSend
	p      *kpush.Producer    // modeSend
	state  atomic.Int32       // modeOrdered
}

// bridge is one producer as seen from Python.
type bridge struct {
	p       *kpush.Producer
	opts    []kpush.Option
	q       *queue
	cfg     *settings
	closed  atomic.Bool
	stopped chan struct{} // closed when the intake goroutine has exited
	work    chan *item    // unbuffered: modeSend records for idle send workers
	quit    chan struct{} // closed by close: idle send workers exit

	mmu    sync.Mutex
	manual *kpush.Producer // lazily created for records with an explicit partition

	imu          sync.Mutex
	intake       []*item
	intakeClosed bool
	wake         chan struct{}

	// items finds records by id for kp_cancel. sync.Map, not a mutex and a
	// map: thousands of send workers insert and delete at once, and a
	// contended mutex serialized them (measured 3× slower at C=10,000).
	items sync.Map // uint64 → *item

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
		work:    make(chan *item),
		quit:    make(chan struct{}),
		tokens:  make(map[uint64]chan tokenReply),
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

// send starts one record. It never blocks on the network or on buffer
// space.
func (b *bridge) send(mode int, it *item, partition int32) {
	b.outstanding.Add(1)
	p, err := b.producerFor(partition)
	if err != nil {
		b.complete(it.id, it.rec.Topic, kpush.Result{}, &kpush.ProduceError{Topic: it.rec.Topic, Partition: partition, Err: err})
		return
	}
	it.rec.Partition = partition
	if mode == modeSend {
		it.ctx, it.cancel = context.WithCancel(context.Background())
		b.items.Store(it.id, it)
		it.p = p
		select {
		case b.work <- it:
		default:
			go b.sendWorker(it)
		}
		return
	}
	b.items.Store(it.id, it)
	b.imu.Lock()
	b.intake = append(b.intake, it)
	b.imu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// workerIdle is how long a send worker waits for another record before
// exiting.
const workerIdle = 5 * time.Second

// sendWorker runs Send for modeSend records, one at a time, then waits for
// the next: reusing goroutines saves creating one (and growing its stack)
// per record. There are as many as records were awaited at once, recently.
func (b *bridge) sendWorker(it *item) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		res, err := it.p.Send(it.ctx, &it.rec)
		b.items.Delete(it.id)
		it.cancel()
		b.complete(it.id, it.rec.Topic, res, err)
		idle.Reset(workerIdle)
		select {
		case it = <-b.work:
		case <-idle.C:
			return
		case <-b.quit:
			return
		}
	}
}

// intakeLoop hands modeOrdered records to SendAsync in order.
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
			b.items.Delete(it.id)
			if !it.state.CompareAndSwap(itemQueued, itemHanded) {
				b.complete(it.id, it.rec.Topic, kpush.Result{}, &kpush.ProduceError{Topic: it.rec.Topic, Partition: -1, Err: errWithdrawn})
				continue
			}
			p, _ := b.producerFor(it.rec.Partition) // created by send already
			id, topic := it.id, it.rec.Topic
			p.SendAsync(context.Background(), &it.rec, func(res kpush.Result, err error) {
				b.complete(id, topic, res, err)
			})
		}
	}
}

// cancel withdraws or abandons a record whose Python future was cancelled.
func (b *bridge) cancelRecord(id uint64) {
	v, ok := b.items.Load(id)
	if !ok {
		return
	}
	it := v.(*item)
	if it.cancel != nil {
		it.cancel()
		return
	}
	it.state.CompareAndSwap(itemQueued, itemWithdrawn)
}

// complete pushes a record's outcome and counts it done.
func (b *bridge) complete(id uint64, topic string, res kpush.Result, err error) {
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
	<-b.stopped
	ctx, cancel := timeoutCtx(timeoutMS)
	defer cancel()
	err := b.p.Close(ctx)
	b.mmu.Lock()
	m := b.manual
	b.mmu.Unlock()
	if m != nil {
		if err2 := m.Close(ctx); err == nil {
			err = err2
		}
	}
	// Close delivered every outcome; the send goroutines push theirs now.
	b.waitIdle(context.Background())
	close(b.quit)
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
