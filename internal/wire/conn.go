// Package wire is kpush's broker connection: dialing, ApiVersions
// negotiation, request framing and pipelining by correlation id.
//
// Goroutines and ownership:
//   - Any goroutine may call Conn.Do; writes are serialized by Conn.wmu, which
//     also guards the correlation id counter and the order in which calls are
//     appended to the pending queue (so the queue order is the wire order).
//   - One reader goroutine per Conn (started by Dial, exits when the
//     connection dies) owns response decoding. It pops calls from the head of
//     the pending queue, checks the correlation id, decodes the response and
//     runs the call's done function on its own goroutine. done must not block
//     for long: it delays every later response of this connection.
//   - Conn.mu guards the pending queue, the dead error, the read deadline,
//     the idle channel and who reads (rown). Lock order: wmu before mu.
//   - The reader goroutine may lend the read of one lone request's response
//     to the goroutine that wrote it (DoOwnRead, ReadOwn); the reader
//     goroutine then parks until the read comes back (ownread.go). Whoever
//     holds the read owns br and rbuf.
//   - Idle closing (idle.go): a timer goroutine per Conn (time.AfterFunc)
//     closes the connection once nothing was written or read for
//     Config.IdleTimeout, only while it holds wmu (no write in progress)
//     and the pending queue is empty, so no request is ever in flight on a
//     connection kpush closes for idleness. lastUse is an atomic.
//   - SASL (sasl.go) runs under wmu: the first authentication in Dial, and
//     re-authentication (KIP-368) inside Do once the session nears its end;
//     before a re-authentication only the mechanism's Authenticate (user
//     code, e.g. a token provider) runs with wmu released (renewLocked).
//     Re-authentication waits, holding wmu, until every pending call has
//     been answered, then re-runs SaslHandshake and SaslAuthenticate on the
//     same connection; callers of Do wait meanwhile, so no request is ever
//     interleaved with an authentication exchange and none is dropped.
//
// When a connection dies (I/O error, timeout, Close) every pending call's done
// runs exactly once with an error; errors of calls that were written wrap
// ErrMaybeDelivered, because the broker may have processed them.
package wire

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
)

// ErrMaybeDelivered wraps the error of a request that was written to the
// broker but whose response never arrived: the broker may have processed it.
var ErrMaybeDelivered = errors.New("request may have reached the broker")

// ErrConnClosed is returned for requests issued on a connection that is
// already closed or broken; such requests were never written.
var ErrConnClosed = errors.New("connection closed")

// ErrRequestTimeout is the cause when a response did not arrive within the
// request timeout.
var ErrRequestTimeout = errors.New("request timed out")

// ErrUnsupported is returned by Conn.Do when the broker does not support any
// version of the request's API that kpush can speak.
var ErrUnsupported = errors.New("broker does not support the request")

// Config holds what a connection needs. The zero value of each field has a
// sensible default except Addr.
type Config struct {
	ClientID       string
	DialTimeout    time.Duration // default 10s
	RequestTimeout time.Duration // per request; default 30s
	// Dial replaces net.Dialer.DialContext when set (tests, proxies).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS enables TLS when non-nil.
	TLS *tls.Config
	// SASL, when set, authenticates the connection after ApiVersions
	// (SaslHandshake v1 and SaslAuthenticate, KIP-152) and again before the
	// session lifetime the broker grants runs out (KIP-368).
	SASL sasl.Mechanism
	// AuthHook, when set, is called after every SASL authentication (reauth
	// tells whether it was a re-authentication) and every failure to
	// authenticate or secure a connection (err wraps ErrAuth). It runs on
	// the dialing or requesting goroutine, after wmu is released, and
	// must not block.
	AuthHook func(addr string, reauth bool, err error)
	// MaxVersions caps the version kpush uses per API key (index = key);
	// a key absent or negative is not capped beyond kmsg's own maximum.
	MaxVersions map[int16]int16
	// IdleTimeout, when positive, closes a connection on which nothing
	// was written or read for that long, with nothing in flight (Java's
	// connections.max.idle.ms), before the broker's own idle closing
	// (connections.max.idle.ms, 10 minutes) can race with a new request.
	// The Conn then reports ErrIdle.
	IdleTimeout time.Duration
	// OnIdleClose, when set, is called (on the timer's goroutine, after
	// the connection is closed) for every connection closed for being
	// idle. It must not block.
	OnIdleClose func(addr string)
	// OnEvent, when set, hears of connections opened, closed and failed
	// and of authentications (events.go); it runs with no Conn lock held
	// and must not block for long.
	OnEvent func(Event)

	// testHookIdleCheck, when set (tests only), runs after every idle
	// check with whether it closed the connection.
	testHookIdleCheck func(closed bool)
	// testHookReauthWaiting, when set (tests only), runs when a
	// re-authentication starts waiting for the pending calls to drain.
	testHookReauthWaiting func()
}

type call struct {
	req      kmsg.Request
	corr     int32
	deadline time.Time
	done     func(kmsg.Response, error)
}

// Conn is one TCP (or TLS) connection to a broker. Safe for concurrent use.
type Conn struct {
	node int32 // from WithNode, for events (events.go)
	addr string
	cfg  *Config
	nc   net.Conn
	fmtr *kmsg.RequestFormatter

	versions [kmsg.MaxKey + 1]int16 // negotiated; -1 when unsupported; read-only after Dial

	wmu  sync.Mutex // guards corr, wbuf, cuts, iov and the write side of nc
	corr int32
	wbuf []byte
	// Produce requests on plain TCP go out with writev: wbuf holds their
	// framing, cuts where the batches go, iov the pieces (produce.go).
	writev bool // read-only after dial
	cuts   []int
	iov    net.Buffers
	iovw   net.Buffers // iov as WriteTo consumes it
	// writes counts requests being written (Add under mu while the
	// connection is alive); the reader, failing the pending calls, waits
	// for them first: with writev the batches are written from the
	// caller's memory, which is the caller's again once done runs.
	writes sync.WaitGroup

	// Guarded by wmu: when the SASL session must be renewed (clock.Mono
	// nanoseconds, immune to wall-clock steps; 0 when it never expires).
	reauthAt   int64
	sessionEnd int64         // when the session ends (clock.Mono ns; 0: never)
	renewing   chan struct{} // non-nil while a Do gets credentials outside wmu; closed when done
	renewAt    atomic.Int64  // reauthAt, for RenewDue without wmu
	authEv     *Event        // an authentication to report once wmu is released (events.go)

	state atomic.Int32 // events.go: dialing, open (ConnOpened reported), gone

	mu      sync.Mutex // guards pending, dead, idle
	pending []call     // in wire order; by value, and its array kept, so a request allocates no call
	dead    error
	idle    chan struct{} // closed by the reader when pending empties; nil unless awaited

	readerDone chan struct{}

	// The read side, owned by the reader goroutine or, while it is lent,
	// by the borrower that is reading (ownread.go).
	br   *bufio.Reader
	rbuf []byte // reused for produce responses (readOne)

	// Guarded by mu (ownread.go): who reads the responses, and the lend's
	// bookkeeping.
	rown       readOwner
	rreading   bool          // the borrower is in its read
	lendID     uint64        // the current or last grant; a borrower's token
	grantTick  uint64        // rticks when lendID was granted
	rticks     uint64        // recall timer ticks of the current lend
	lendGrants uint64        // grants during the current lend
	seenGrants uint64        // lendGrants at the last tick
	lendWaste  uint8         // consecutive lends recalled unused (backoff exponent)
	lendSkip   uint8         // lend opportunities still to skip
	lends      uint64        // lends so far (tests)
	rwake      chan struct{} // one slot: the reader goroutine has to look at rown
	peek       *peeker       // plain TCP on Unix only: looks at a socket whose read is lent (peerGone); nil: never lend
	rtimer     *time.Timer   // the reader goroutine's recall timer; its own, not under mu
	ownReads   atomic.Int64  // responses read by their writers (tests, stats)

	lastUse   atomic.Int64               // clock.Mono of the last write or response
	idleTimer atomic.Pointer[time.Timer] // nil without Config.IdleTimeout
}

// dial is Dial (events.go) without the events.
func dial(ctx context.Context, addr string, cfg *Config, node int32) (*Conn, error) {
	dialTimeout := cfg.DialTimeout
	if dialTimeout <= 0 {
		dialTimeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()

	dial := cfg.Dial
	if dial == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		dial = d.DialContext
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if cfg.TLS != nil {
		if nc, err = handshakeTLS(ctx, nc, addr, cfg.TLS); err != nil {
			return nil, cfg.authFailed(node, addr, err)
		}
	}
	c := &Conn{
		node:       node,
		addr:       addr,
		cfg:        cfg,
		nc:         nc,
		fmtr:       kmsg.NewRequestFormatter(kmsg.FormatterClientID(cfg.ClientID)),
		readerDone: make(chan struct{}),
		rwake:      make(chan struct{}, 1),
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		c.writev = true // TLS would copy the pieces into records anyway
		// No lent reads with SASL: a re-authentication can run inside a
		// lent Do before its read deadline is set, so the borrower could
		// block past the delivery deadline it was lent on (review).
		if raw, err := tc.SyscallConn(); probeSupported && err == nil && cfg.SASL == nil {
			c.peek = newPeeker(raw)
		}
	}
	for i := range c.versions {
		c.versions[i] = -1
	}
	// The handshake runs before the reader goroutine exists, so a broker that
	// never answers is bounded by the dial deadline.
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	// Cancellation (not only the deadline) must interrupt the handshake.
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	err = c.negotiate(br)
	if !stop() || err != nil {
		nc.Close()
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err) // both match errors.Is
		}
		err = fmt.Errorf("api versions with %s: %w", addr, err)
		if cfg.TLS != nil && isTLSRejection(err) {
			// With TLS 1.3 a broker that refuses our certificate says so
			// only after the handshake, on the first read.
			err = cfg.authFailed(node, addr, fmt.Errorf("%w: %w", ErrAuth, err))
		} else if cfg.TLS == nil && closedByPeer(err) && speaksTLS(ctx, addr, cfg) {
			err = cfg.authFailed(node, addr, fmt.Errorf("%w: the broker at %s expects TLS (enable TLS: WithTLS, security.protocol=SSL or SASL_SSL)", ErrAuth, addr))
		}
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	c.touch()
	c.br = br
	go c.readLoop()
	if cfg.SASL != nil {
		c.wmu.Lock()
		err := c.authenticateLocked(ctx, false, nil)
		c.unlockWrite()
		if err != nil {
			c.Close()
			return nil, err
		}
	}
	c.startIdleTimer()
	return c, nil
}

// Addr returns the address this connection was dialed to.
func (c *Conn) Addr() string { return c.addr }

// Version returns the negotiated version for an API key, or -1.
func (c *Conn) Version(key int16) int16 {
	if key < 0 || int(key) >= len(c.versions) {
		return -1
	}
	return c.versions[key]
}

// Err returns the error that killed the connection, or nil while it is alive.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead
}

// Done is closed when the connection has died and every pending call has
// been completed.
func (c *Conn) Done() <-chan struct{} { return c.readerDone }

// Do writes req at the negotiated version and arranges for done to run on the reader
// goroutine with the response or an error. When noResponse is true (Produce
// with acks=0) done runs on the calling goroutine once the write completes.
// Do returns an error, and does not call done, only when the request was
// not written at all. A ProduceResponse may alias the reader's frame,
// which is reused once done returns: done must not keep it (or pass it to
// another goroutine); Produce therefore never goes through Request.
func (c *Conn) Do(req kmsg.Request, noResponse bool, done func(kmsg.Response, error)) error {
	_, err := c.do(req, noResponse, false, done)
	return err
}

// do is Do; with ownRead it asks to read the response on the calling
// goroutine (DoOwnRead) and returns the lend's token, 0 when not granted.
func (c *Conn) do(req kmsg.Request, noResponse, ownRead bool, done func(kmsg.Response, error)) (lend uint64, _ error) {
	c.wmu.Lock()
	if err := c.renewLocked(); err != nil {
		if errors.Is(err, errRenewWait) {
			c.unlockWrite()
			return 0, fmt.Errorf("%w: %w", ErrConnClosed, err)
		}
		c.fail(err) // under wmu: no other Do renews on a connection failing
		c.unlockWrite()
		return 0, fmt.Errorf("%w: %w", ErrConnClosed, err)
	}
	lend, err, werr := c.sendLocked(req, noResponse, ownRead && !noResponse, done)
	c.unlockWrite()
	if err != nil {
		return 0, err
	}
	if noResponse {
		if werr != nil {
			done(nil, fmt.Errorf("%w: %w", ErrMaybeDelivered, werr))
		} else {
			done(nil, nil)
		}
	}
	if werr != nil {
		lend = 0 // the reader completes the call
	}
	return lend, nil
}

// sendLocked writes req with c.wmu held. err reports a request that was not
// written (done will not run); werr a failed write, after which the
// connection is dead and the reader completes the pending call (for
// noResponse calls the caller runs done, after releasing wmu). With
// ownRead, lend is the token of a read lent to the caller (ownread.go), 0
// when the reader goroutine reads the response.
func (c *Conn) sendLocked(req kmsg.Request, noResponse, ownRead bool, done func(kmsg.Response, error)) (lend uint64, err, werr error) {
	v := c.Version(req.Key())
	if v < 0 {
		return 0, fmt.Errorf("%w: api key %d on %s", ErrUnsupported, req.Key(), c.addr), nil
	}
	req.SetVersion(v)
	timeout := c.requestTimeout()
	c.corr++
	pr, framed := req.(*kmsg.ProduceRequest)
	if framed = framed && c.writev && v <= 12; framed {
		c.wbuf, c.cuts = frameProduce(c.wbuf[:0], c.cuts[:0], c.cfg.ClientID, pr, c.corr)
	} else {
		if need := sizeHint(req); cap(c.wbuf) < need {
			c.wbuf = getBigBuf(need)
		}
		c.wbuf = c.fmtr.AppendRequest(c.wbuf[:0], req, c.corr)
	}
	now := time.Now()
	deadline := now.Add(timeout)
	// The dead check and the append share one critical section: once the
	// reader has failed the pending calls and exited, no call may join them.
	c.mu.Lock()
	if c.dead != nil {
		err := c.dead
		c.mu.Unlock()
		return 0, fmt.Errorf("%w: %v", ErrConnClosed, err), nil
	}
	if c.rown == ownLent {
		// Nobody has read the socket since the lend began: a broker that
		// closed it meanwhile must not be written to (the request would be
		// maybe-delivered, where it is certainly not).
		if perr := c.peek.peerGone(); perr != nil {
			c.dead = fmt.Errorf("read from %s: %w", c.addr, perr)
			c.rown = ownReader
			c.mu.Unlock()
			c.wakeReader() // it completes nothing (nothing is pending) and exits
			return 0, fmt.Errorf("%w: %v", ErrConnClosed, c.dead), nil
		}
	}
	if !noResponse {
		lend = c.borrowLocked(ownRead)
		c.pending = append(c.pending, call{req: req, corr: c.corr, deadline: deadline, done: done})
		if len(c.pending) == 1 {
			c.nc.SetReadDeadline(deadline)
		}
	}
	c.writes.Add(1)
	c.mu.Unlock()
	defer c.writes.Done()
	c.nc.SetWriteDeadline(now.Add(timeout))
	c.touch()
	if framed {
		c.iov = produceBuffers(c.iov[:0], c.wbuf, c.cuts, pr)
		c.iovw = c.iov // WriteTo consumes its receiver; a local copy would escape
		_, werr = c.iovw.WriteTo(c.nc)
		clear(c.iov) // pin no batch
	} else {
		_, werr = c.nc.Write(c.wbuf)
	}
	if cap(c.wbuf) > maxKeptBuf {
		putBigBuf(c.wbuf) // do not pin one huge request's buffer to the connection
		c.wbuf = nil
	}
	if werr != nil {
		// Part of the request may be on the wire: the broker may process
		// it. The reader completes the pending call.
		c.fail(fmt.Errorf("write to %s: %w", c.addr, werr))
	}
	return lend, nil, werr
}

func (c *Conn) requestTimeout() time.Duration {
	if c.cfg.RequestTimeout <= 0 {
		return 30 * time.Second
	}
	return c.cfg.RequestTimeout
}

// maxKeptReadBuf bounds the response buffer the reader keeps for the next
// produce response.
const maxKeptReadBuf = 64 << 10

// maxKeptPending bounds the pending array a connection keeps while
// nothing is pending.
const maxKeptPending = 64

// maxKeptBuf bounds the write buffer a connection keeps between requests;
// larger ones go back to bigBufs, which the GC may empty.
const maxKeptBuf = 4 << 20

// bigBufs recycles write buffers of large produce requests (*[]byte).
// Without it each such request grew a fresh buffer by doubling: under
// heavy async load that was a fifth of kpush's CPU and 500 bytes of
// garbage per record.
var bigBufs sync.Pool

func getBigBuf(need int) []byte {
	if bp, ok := bigBufs.Get().(*[]byte); ok {
		if cap(*bp) >= need {
			return (*bp)[:0]
		}
		bigBufs.Put(bp) // too small for this one; another request may fit
	}
	return make([]byte, 0, need+need/4)
}

func putBigBuf(b []byte) {
	b = b[:0]
	bigBufs.Put(&b)
}

// sizeHint estimates the encoded size of a produce request (its record
// batches dominate), so that its buffer is allocated once; 0 for others.
func sizeHint(req kmsg.Request) int {
	pr, ok := req.(*kmsg.ProduceRequest)
	if !ok {
		return 0
	}
	n := 512
	for i := range pr.Topics {
		t := &pr.Topics[i]
		n += 32 + len(t.Topic)
		for j := range t.Partitions {
			n += 32 + len(t.Partitions[j].Records)
		}
	}
	return n
}

// Request is the blocking form of Do for control requests (metadata,
// InitProducerID); not for Produce, whose response frame is reused (Do).
func (c *Conn) Request(ctx context.Context, req kmsg.Request) (kmsg.Response, error) {
	return c.request(ctx, req, c.Do)
}

// requestLocked is Request for a caller holding c.wmu (SASL).
func (c *Conn) requestLocked(ctx context.Context, req kmsg.Request) (kmsg.Response, error) {
	return c.request(ctx, req, func(req kmsg.Request, _ bool, done func(kmsg.Response, error)) error {
		_, err, _ := c.sendLocked(req, false, false, done)
		return err
	})
}

type result struct {
	resp kmsg.Response
	err  error
}

// request issues req with do (Do, or sendLocked under wmu) and waits.
func (c *Conn) request(ctx context.Context, req kmsg.Request, do func(kmsg.Request, bool, func(kmsg.Response, error)) error) (kmsg.Response, error) {
	ch := make(chan result, 1)
	if err := do(req, false, func(r kmsg.Response, err error) { ch <- result{r, err} }); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-ctx.Done():
		// The call completes later on the reader goroutine; ch is buffered.
		return nil, ctx.Err()
	}
}

// Close closes the connection; pending calls fail with ErrMaybeDelivered.
// It waits for the reader goroutine to exit.
func (c *Conn) Close() error {
	c.fail(ErrConnClosed)
	<-c.readerDone
	return nil
}

// fail marks the connection dead and closes the socket; the reader goroutine
// then completes every pending call.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.dead == nil {
		c.dead = err
	}
	c.mu.Unlock()
	c.wakeReader() // a reader that lent the read is parked (ownread.go)
	c.nc.Close()
	c.stopIdleTimer()
}

func (c *Conn) readLoop() {
	defer close(c.readerDone)
	var err error
	for {
		// awaitRead returns once the reader goroutine owns the read: at
		// once, or after lending it (ownread.go).
		if err = c.awaitRead(); err != nil {
			break
		}
		if err = c.readOne(); err != nil {
			break
		}
	}

	c.mu.Lock()
	if c.dead == nil {
		c.dead = readErr(err)
	}
	dead := c.dead
	pending := c.pending
	c.pending = nil
	c.signalIdleLocked()
	c.mu.Unlock()
	c.nc.Close() // ends a write in progress, which wait waits for
	c.stopIdleTimer()
	c.writes.Wait() // no write starts once dead is set (sendLocked)
	for _, cl := range pending {
		cl.done(nil, fmt.Errorf("%w: %s: %w", ErrMaybeDelivered, c.addr, dead))
	}
	c.closed(dead)
}
