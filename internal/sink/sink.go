package sink

// Sink: one sender loop per broker.
//
// Ownership: own is held by whoever sends on the sink — its loop goroutine,
// or a Send caller writing a request itself while the sink is idle (kick) —
// and guards conn, builder, dialFails, gen and exited. mu guards ready
// (partitions with something to send); wake is a one-slot channel so
// nudges coalesce. inflight is written by the sender (increment) and the
// reader goroutine (decrement); the reader wakes the loop when a slot
// frees and partitions wait for it. throttleUntil is written by the
// reader. rmu guards reqs, the in-flight requests' batches: the sender
// adds, the reader goroutine removes (before handling a response), the
// reaper reads (expire.go); both hand-overs (drain → track, untrack →
// handle) report to the reaper when one of its scans overlapped them
// (reaper.go). encode holds the batch's PartitionQueue.recMu while it
// reads the records' memory. Lock order: own → Partition.mu → Sink.mu;
// own → rmu → PartitionQueue.recMu; own is never taken with another kpush
// lock held. The reaper expires a partition with due batches in flight
// under rmu, queueing its async outcomes there (rmu → PartitionQueue.mu →
// cbQueue.mu, expire.go); nothing takes rmu under a partition's mu.
// The coalescing wait's fields (coalesceSince, coalesceAnswers, scratch,
// answers, coalesceNeed) are described in coalesce.go.

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/internal/batch"
	"github.com/kpush/kpush/internal/clock"
	"github.com/kpush/kpush/internal/wire"
)

// Sink sends the partitions one broker leads.
type Sink struct {
	eng  *Engine
	Node int32

	addr atomic.Pointer[string]

	mu    sync.Mutex
	ready []*PartitionQueue
	spare []*PartitionQueue

	wake     chan struct{}
	quit     chan struct{} // closed by Stop
	quitOnce sync.Once
	inflight atomic.Int32
	cb       callbacks
	loopDone chan struct{} // closed when the loop and its connection are done

	// own is held by the goroutine sending on this sink (the loop, or a
	// caller in kick); it guards the fields below.
	own       sync.Mutex
	conn      *wire.Conn
	builder   batch.Builder
	dialFails int
	gen       uint64 // request number, so a partition joins a request once
	exited    bool   // the loop is done: nobody sends any more

	// Coalescing (coalesce.go): the loop's wait and its accounting.
	coalesceSince   int64  // clock.Mono when the current wait began; 0: none (own)
	coalesceAnswers uint64 // answers when the latest request was written (own)
	scratch         []*PartitionQueue
	answers         atomic.Uint64 // responses handled (response.go)
	coalesceNeed    atomic.Int64  // bytes Adds must bring to end the wait; 0: no wait

	throttleUntil atomic.Int64 // clock.Mono nanoseconds; written by the reader

	rmu  sync.Mutex          // guards reqs
	reqs map[uint64][]*Batch // in-flight requests' batches by request number (expire.go)

	latency atomic.Int64 // EWMA of request round trips, nanoseconds
}

// NewSink creates and starts the sink for broker node at addr.
func (e *Engine) NewSink(node int32, addr string) *Sink {
	s := &Sink{eng: e, Node: node, wake: make(chan struct{}, 1), quit: make(chan struct{}), loopDone: make(chan struct{})}
	s.cb.wake = make(chan struct{}, 1)
	s.cb.eng = e
	s.addr.Store(&addr)
	e.Go(s.loop)
	// The callback goroutine outlives the loop: closing the connection
	// completes in-flight batches, whose async callbacks it still runs.
	e.Go(func() { s.cb.run(s.loopDone) })
	return s
}

// SetAddr updates the broker's address (takes effect on the next dial).
func (s *Sink) SetAddr(addr string) {
	if *s.addr.Load() != addr {
		s.addr.Store(&addr)
	}
}

// Latency returns a moving average of this broker's produce round trips.
func (s *Sink) Latency() time.Duration { return time.Duration(s.latency.Load()) }

// Addr returns the broker's address.
func (s *Sink) Addr() string { return *s.addr.Load() }

// Nudge wakes the sink's loop (non-blocking; nudges coalesce).
func (s *Sink) Nudge() { s.nudge() }

func (s *Sink) nudge() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Sink) pushReady(p *PartitionQueue) {
	s.mu.Lock()
	s.ready = append(s.ready, p)
	s.mu.Unlock()
}

func (s *Sink) takeReady() []*PartitionQueue {
	s.mu.Lock()
	r := s.ready
	s.ready = s.spare[:0]
	s.spare = nil
	s.mu.Unlock()
	return r
}

func (s *Sink) giveBackSpare(r []*PartitionQueue) {
	clear(r)
	s.mu.Lock()
	if s.spare == nil {
		s.spare = r[:0]
	}
	s.mu.Unlock()
}

func (s *Sink) loop() {
	defer func() {
		if r := recover(); r != nil {
			// A panic on this goroutine (a bug, or user code it runs)
			// crashes the program like any other: the loop may hold
			// own, and the Lock below would hang it silently instead.
			// The traceback still shows where it began.
			panic(r)
		}
		s.own.Lock() // a caller may be writing inline; it sends nothing after this
		s.exited = true
		if s.conn != nil {
			s.conn.Close() // waits for the reader: every in-flight batch is handled
		}
		s.own.Unlock()
		close(s.loopDone)
	}()
	e := s.eng
	var timer *time.Timer
	var timerC <-chan time.Time
	for {
		select {
		case <-s.wake:
		case <-timerC:
			timerC = nil
		case <-e.stop:
			return
		case <-s.quit:
			return
		}
		if h := e.testHooks.Load(); h != nil && h.LoopWoken != nil {
			h.LoopWoken()
		}
		select {
		case <-e.stop: // Close gave up: send nothing new
			return
		case <-s.quit:
			return
		default:
		}
		s.own.Lock()
	drain:
		for {
			if wait := time.Duration(s.throttleUntil.Load() - clock.Mono()); wait > 0 {
				timer, timerC = resetTimer(timer, wait)
				break
			}
			if int(s.inflight.Load()) >= e.cfg.MaxInflight {
				break // the reader goroutine nudges when a slot frees
			}
			if !s.pruneReady() {
				break
			}
			if !s.ensureConn() {
				timer, timerC = resetTimer(timer, e.backoff(s.dialFails))
				break
			}
			if e.idem.Enabled() {
				select {
				case <-e.idem.Ready():
				default:
					// The metadata goroutine loads the producer ID and then
					// nudges every sink.
					timer, timerC = resetTimer(timer, 50*time.Millisecond)
					break drain
				}
			}
			if wait := s.coalesceWaitLocked(); wait > 0 {
				// A response, a resend, CoalesceBytes of records
				// (Add nudges) or the timer ends the wait.
				timer, timerC = resetTimer(timer, wait)
				break
			}
			sent, lingerUntil, _ := s.produce(false, 0)
			if lingerUntil > 0 {
				timer, timerC = resetTimer(timer, time.Duration(lingerUntil-clock.Mono()))
			}
			if !sent {
				break
			}
		}
		s.own.Unlock()
	}
}

// kick gets a partition that just became ready sent (PartitionQueue.Add of
// a synchronous Send). When the sink is idle — nothing in flight, its
// connection up, nobody else sending — the caller writes the request
// itself: at low concurrency that saves the hand-off to the loop goroutine
// (a wake-up, often of an idle P) on every record. Anything the caller
// could wait for past its ctx, or that batches better later, is the loop's
// job: a dial, a SASL renewal, a throttle or linger wait, the producer ID
// still loading, requests in flight (records batch up behind them), a
// request over inlineMaxBytes (a write that could block), and acks=0 (a
// request counts as answered once written, so nothing would ever be in
// flight and every write, however backed up the socket, would be the
// caller's).
//
// With ownRead (Pending.OwnRead: the Send cannot be canceled) the caller
// also reads the response itself when the request is alone on the
// connection and the caller may wait for the whole request timeout before
// its delivery deadline (until, clock.Mono): the network poller then wakes
// the caller directly instead of the connection's reader goroutine, which
// would wake the caller (wire/ownread.go). The read happens after own is
// released, so the loop and other senders go on meanwhile.
func (s *Sink) kick(ownRead bool, until int64) {
	if s.eng.cfg.Acks == 0 || s.inflight.Load() != 0 || !s.own.TryLock() {
		s.nudge()
		return
	}
	var maxWait time.Duration
	if ownRead {
		maxWait = time.Duration(until - clock.Mono())
	}
	more, conn, lend := s.sendIdleLocked(maxWait)
	s.own.Unlock()
	if more {
		s.nudge()
	}
	if lend != 0 {
		read := conn.ReadOwn(lend)
		if h := s.eng.testHooks.Load(); h != nil && h.OwnRead != nil {
			h.OwnRead(read)
		}
	}
}

// sendIdleLocked is kick's request, with own held; it reports whether the
// loop must still look at the ready list, and the connection and token of
// a read lent to the caller (lend 0: none) when maxWait > 0.
func (s *Sink) sendIdleLocked(maxWait time.Duration) (more bool, conn *wire.Conn, lend uint64) {
	e := s.eng
	if s.exited || s.conn == nil || s.inflight.Load() != 0 || s.throttleUntil.Load() > clock.Mono() {
		return true, nil, 0
	}
	select {
	case <-e.stop:
		return true, nil, 0
	case <-s.quit:
		return true, nil, 0
	default:
	}
	if e.idem.Enabled() {
		select {
		case <-e.idem.Ready():
		default:
			return true, nil, 0
		}
	}
	if s.conn.Err() != nil || s.conn.RenewDue() {
		return true, nil, 0 // the loop redials or renews: the caller does not wait for that
	}
	if !s.pruneReady() {
		return false, nil, 0
	}
	conn = s.conn
	_, lingerUntil, lend := s.produce(true, maxWait)
	if lingerUntil > 0 {
		return true, conn, lend // the loop sets the timer
	}
	return s.hasReady(), conn, lend
}

// inlineMaxBytes bounds the request a Send caller writes itself (kick):
// with nothing in flight the broker has read what came before, so a write
// this small goes into the socket buffer at once.
const inlineMaxBytes = 64 << 10

// hasReady reports whether partitions wait on the ready list.
func (s *Sink) hasReady() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ready) > 0
}

func resetTimer(t *time.Timer, d time.Duration) (*time.Timer, <-chan time.Time) {
	if t == nil {
		t = time.NewTimer(d)
	} else {
		t.Reset(d)
	}
	return t, t.C
}

// pruneReady drops stale ready-list entries (partitions that moved to
// another leader since they were queued here) and reports whether any
// partition this sink leads is left. Only then is dialing worth it: a
// broker that left the cluster must not be dialed for a stale entry.
func (s *Sink) pruneReady() bool {
	s.mu.Lock()
	r := s.ready
	s.ready = nil
	s.mu.Unlock()
	if len(r) == 0 {
		return false
	}
	keep := r[:0]
	for _, p := range r {
		if p.Leader() == s { // Partition.mu is taken without Sink.mu held
			keep = append(keep, p)
		}
	}
	clear(r[len(keep):])
	s.mu.Lock()
	s.ready = append(keep, s.ready...) // entries pushed meanwhile go after
	live := len(s.ready) > 0
	s.mu.Unlock()
	return live
}

// Stop ends the sink (its broker left the cluster): the loop closes the
// connection, which completes what is in flight, and exits; the callback
// goroutine delivers what is queued and exits. Partitions must no longer
// name this sink as their leader. Safe to call more than once.
func (s *Sink) Stop() { s.quitOnce.Do(func() { close(s.quit) }) }

// Idle reports whether the sink has nothing queued and nothing in flight,
// so that it can be stopped.
func (s *Sink) Idle() bool {
	if s.inflight.Load() > 0 {
		return false
	}
	s.mu.Lock()
	r := append([]*PartitionQueue(nil), s.ready...)
	s.mu.Unlock()
	for _, p := range r {
		if p.Leader() == s {
			return false
		}
	}
	return true
}

// ensureConn dials when there is no live connection.
func (s *Sink) ensureConn() bool {
	if s.conn != nil && s.conn.Err() == nil {
		return true
	}
	if s.conn != nil {
		s.conn.Close() // waits for the reader: every in-flight batch is back
		s.conn = nil
	}
	c, err := wire.Dial(wire.WithNode(s.eng.ctx, s.Node), s.Addr(), s.eng.cfg.Wire)
	if err != nil {
		s.dialFails++
		if errors.Is(err, wire.ErrAuth) {
			// Retrying cannot fix credentials or certificates: fail what
			// waits for this broker now, not at the delivery timeout.
			s.failReady(err)
			s.eng.cfg.TriggerMetadata()
			return false
		}
		s.eng.cfg.Logger.Warn("kpush: broker connection failed", "broker", s.Node, "addr", s.Addr(), "err", err)
		s.eng.cfg.TriggerMetadata()
		return false
	}
	s.dialFails = 0
	s.conn = c
	return true
}

// failReady fails the unsent records of every partition on the ready list
// (the connection could not be authenticated). Later records try again.
func (s *Sink) failReady(err error) {
	parts := s.takeReady()
	for _, p := range parts {
		s.eng.notifyAll(p.failUnsent(s, err), &s.cb, false) // own held
	}
	s.giveBackSpare(parts)
}

// produce drains ready partitions into one request and writes it, with own
// held (inline: by a Send caller, see kick). It reports whether it sent
// something, and the earliest time a lingering partition becomes ready (0
// if none). With maxWait > 0 (inline only) it asks the connection to lend
// the caller the response's read (wire.Conn.DoOwnRead); lend is the token
// for ReadOwn, 0 when not lent.
func (s *Sink) produce(inline bool, maxWait time.Duration) (sent bool, lingerUntil int64, lend uint64) {
	e := s.eng
	mark := e.scanMark() // before drain takes batches out of the reaper's sight
	parts := s.takeReady()
	s.gen++
	nowNs := clock.Mono()
	var batches []*Batch
	var requeue []*PartitionQueue
	used := 0 // request bytes taken by the batches so far (MaxRequestBytes)
	for _, p := range parts {
		maxBytes := e.cfg.MaxBatchBytes
		if inline {
			// Only what an idle connection's socket takes without
			// blocking: the caller must not wait in a write past its
			// ctx. Below MaxBatchBytes, a record that does not fit stays
			// for the loop (drain).
			if maxBytes = min(maxBytes-1, inlineMaxBytes-used-framing(p)); maxBytes <= batch.BatchOverhead {
				requeue = append(requeue, p)
				continue
			}
		} else if limit := e.cfg.MaxRequestBytes; limit > 0 && len(batches) > 0 {
			if maxBytes = min(maxBytes, limit-used-framing(p)); maxBytes <= batch.BatchOverhead {
				requeue = append(requeue, p) // the request is full: the next one takes it
				continue
			}
		}
		b, exp, more, until := p.drain(s, s.gen, nowNs, maxBytes)
		if until > 0 && (lingerUntil == 0 || until < lingerUntil) {
			lingerUntil = until
		}
		if len(exp) > 0 {
			s.eng.notifyAll(exp, &s.cb, false) // own held: no callback here
		}
		if more {
			requeue = append(requeue, p)
		}
		if b != nil {
			batches = append(batches, b)
			used += b.wireSize() + framing(p)
		}
	}
	if len(requeue) > 0 {
		s.mu.Lock()
		s.ready = append(s.ready, requeue...)
		s.mu.Unlock()
	}
	s.giveBackSpare(parts)
	if len(batches) == 0 {
		return false, lingerUntil, 0
	}
	e.window(drainToTrack)
	s.track(s.gen, batches) // before encoding: the reaper may expire their records meanwhile
	e.handedOver(mark, batches)

	req := kmsg.NewPtrProduceRequest()
	req.Acks = e.cfg.Acks
	req.TimeoutMillis = int32(e.cfg.RequestTimeout / time.Millisecond)
	for _, b := range batches {
		if b.bytes == nil {
			s.encode(b)
		}
		if n := len(req.Topics); n == 0 || req.Topics[n-1].Topic != b.p.Topic {
			t := kmsg.NewProduceRequestTopic()
			t.Topic = b.p.Topic
			req.Topics = append(req.Topics, t)
		}
		t := &req.Topics[len(req.Topics)-1]
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition = b.p.ID
		rp.Records = b.bytes
		t.Partitions = append(t.Partitions, rp)
		if b.attempts > 1 {
			e.Stats.Retries.Add(1)
		}
	}
	s.inflight.Add(1)
	s.coalesceAnswers = s.answers.Load() // the next request waits for a later response (coalesce.go)
	e.Stats.Inflight.Add(1)
	e.Stats.Requests.Add(1)
	sentAt := nowNs
	gen := s.gen
	hev := s.requestEvent(batches) // nil without request hooks (hooks.go)
	if e.cfg.Hooks.Stamps {
		stampWritten(batches)
	}
	done := func(r kmsg.Response, err error) {
		mark := e.scanMark()
		s.untrack(gen)
		s.answered(hev, err)
		e.window(untrackToHandle)
		s.handle(batches, r, err, sentAt, e.cfg.Acks != 0) // acks=0: on the sender, own held
		e.handedOver(mark, batches)
	}
	var err error
	if maxWait > 0 && inline && e.cfg.Acks != 0 {
		lend, err = s.conn.DoOwnRead(req, maxWait, done)
	} else {
		err = s.conn.Do(req, e.cfg.Acks == 0, done)
	}
	s.written(hev, err)
	if h := e.testHooks.Load(); h != nil && h.Written != nil && err == nil {
		h.Written(inline)
	}
	if err != nil {
		// Not written: the batches are retried, definitely unsent.
		mark := e.scanMark()
		s.untrack(gen)
		s.handle(batches, nil, fmt.Errorf("%w: %w", errNotSent, err), sentAt, false) // own held
		e.handedOver(mark, batches)
	}
	return true, lingerUntil, lend
}

var errNotSent = errors.New("request not sent")

// encode builds b's RecordBatch bytes on first send, and again after a
// split or a KIP-467 partial failure.
func (s *Sink) encode(b *Batch) {
	bl := &s.builder
	bl.Reset()
	// Under recMu: a record whose outcome is given early meanwhile is
	// copied first (Pending.own), never read from the caller's memory after.
	// Append copies the records into the builder, so the lock ends there:
	// compression (which the reaper would wait for under the partition's
	// mu) and the logger (user code) run outside it.
	b.p.recMu.Lock()
	for _, r := range b.recs {
		bl.Append(&r.Rec)
	}
	b.p.recMu.Unlock()
	out, err := bl.AppendFinish(s.eng.getBuf(), s.eng.cfg.Codec, b.id.Producer, b.id.Epoch, b.seq)
	if err != nil {
		// Compression failing is a bug or resource exhaustion; send
		// uncompressed rather than lose the batch.
		s.eng.cfg.Logger.Error("kpush: compression failed; sending uncompressed", "err", err)
		out, _ = bl.Finish(batch.None, b.id.Producer, b.id.Epoch, b.seq)
	}
	b.bytes = out
	s.eng.Stats.Batches.Add(1)
	s.eng.Stats.BatchedRecords.Add(int64(len(b.recs)))
}
