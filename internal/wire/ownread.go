package wire

// Own reads: the writer of a lone request reads its response itself.
//
// At one request at a time a round trip costs two goroutine hand-offs on
// top of the syscalls: the network poller wakes the reader goroutine, and
// the reader wakes the caller waiting for the outcome (often on an idle P,
// which the runtime has to start). A caller that waits for the response
// anyway and cannot be canceled can read it on its own goroutine instead:
// the poller then wakes the caller directly.
//
// Goroutines and ownership:
//   - Whoever holds the read owns c.br and c.rbuf: the reader goroutine
//     while rown is ownReader, the borrower while it is in ReadOwn. Every
//     change of rown happens under c.mu, so the hand-over of br orders
//     the two goroutines' accesses.
//   - The reader goroutine lends the read (ownReader → ownLent) only when
//     nothing is pending, and then parks in awaitRead on rwake and its
//     recall timer (rtimer, the reader's alone). While the read is lent
//     nobody reads the socket.
//   - A writer whose request is alone (sendLocked, under wmu and mu) and
//     who asked for it (DoOwnRead) takes the lent read: ownLent →
//     ownBorrowed with a token (lendID). Any other request appended while
//     the read is lent and unborrowed takes it back for the reader
//     (ownLent → ownReader, rwake).
//   - The borrower reads exactly one response (its own: it was alone) in
//     ReadOwn and runs its done on its goroutine, then gives the read back:
//     to the lend (ownBorrowed → ownLent) when nothing else is pending, else
//     to the reader (→ ownReader, rwake); also after an error, having set
//     dead, so the reader completes what is pending and exits.
//   - The reader takes the read back by itself on its timer: a lend unused
//     for a tick (lendTick), a grant whose read has not started within one
//     to two ticks (the borrower's ReadOwn then finds its token stale and
//     reads nothing), and at once when the connection dies (fail, idle
//     close: rwake) — ownRecalling while a borrower is in its read, which
//     the dead socket ends.
//   - Lends that end unused make the reader skip the next 2ⁿ chances to
//     lend (n consecutive unused lends, at most 64), so a connection whose
//     requests come from the sink loop is not parked and woken for nothing.
//
// While the read is lent and unborrowed nobody watches the socket, so a
// broker closing it would go unnoticed until the next request was written
// into it (and that request would be maybe-delivered where it is certainly
// not). So every request written while the read is lent first peeks at the
// socket without blocking (peerGone, ownread_unix.go: one recv with
// MSG_PEEK on the non-blocking socket); a closed or reset socket kills the
// connection and the request is not written (ErrConnClosed). The reader
// lends only on plain TCP on Unix (Conn.peek), where it can peek, and
// without SASL (a re-authentication inside a lent Do would delay the
// borrower's read past the time it was lent for).
//
// A borrower blocks in a read bounded by the request timeout (the read
// deadline of its request, the head of the queue); DoOwnRead grants only
// when the caller may wait that long.

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// readOwner says who reads a connection's responses; guarded by Conn.mu.
type readOwner uint8

const (
	// ownReader: the reader goroutine reads, or is about to.
	ownReader readOwner = iota
	// ownLent: the reader goroutine is parked; nothing is pending; the
	// next lone request that asks may take the read.
	ownLent
	// ownBorrowed: a request's writer holds the read (Conn.lendID);
	// Conn.rreading tells whether its read has started.
	ownBorrowed
	// ownRecalling: the reader wants the read back (the connection died)
	// while the borrower is in its read; the borrower gives it back when
	// its read ends.
	ownRecalling
)

// lendTick is the recall timer's period: a lend unused for a tick, or a
// grant whose read has not started within one to two ticks, goes back to
// the reader goroutine. Tests may change it (export_test.go).
var lendTick atomic.Int64

func init() { lendTick.Store(int64(10 * time.Millisecond)) }

// lendMargin is what DoOwnRead leaves between the end of a borrower's
// longest read (its request's read deadline, set when the request is
// written) and the caller's maxWait, measured before the write: the write
// itself, short (callers lend only for small requests on idle
// connections), must not push the read past what the caller may wait.
const lendMargin = 100 * time.Millisecond

// maxLendWaste caps the backoff exponent: at most 1<<6 = 64 lend chances
// are skipped after unused lends.
const maxLendWaste = 6

// DoOwnRead is Do for a request whose caller will wait for its outcome
// and cannot be canceled meanwhile (a synchronous Send without a Done
// channel), and may wait up to maxWait: nothing is lent unless that is
// more than the request timeout plus lendMargin. When the request is
// alone on the connection, its read is lent to the caller: lend is
// non-zero, and the caller must then call ReadOwn(lend) once, without
// holding locks that done takes. With lend 0, the reader goroutine runs
// done as with Do. Never for noResponse requests.
func (c *Conn) DoOwnRead(req kmsg.Request, maxWait time.Duration, done func(kmsg.Response, error)) (lend uint64, err error) {
	return c.do(req, false, c.requestTimeout()+lendMargin < maxWait, done)
}

// ReadOwn reads the response of the request that DoOwnRead lent the read
// for, and runs its done on the calling goroutine (the response, or the
// error that killed the connection meanwhile: then the reader goroutine
// runs done, as for every other pending call). It blocks at most until
// the request's read deadline. It reports whether it read a response;
// false when the read was taken back first (the reader goroutine then runs
// done).
func (c *Conn) ReadOwn(lend uint64) bool {
	c.mu.Lock()
	if lend == 0 || c.rown != ownBorrowed || c.lendID != lend || c.rreading {
		c.mu.Unlock()
		return false
	}
	if c.dead != nil {
		c.rown = ownReader
		c.mu.Unlock()
		c.wakeReader()
		return false
	}
	c.rreading = true
	c.mu.Unlock()

	err := c.readOne()

	c.mu.Lock()
	c.rreading = false
	if err != nil && c.dead == nil {
		c.dead = readErr(err)
	}
	if c.dead != nil || c.rown == ownRecalling || len(c.pending) > 0 {
		c.rown = ownReader
		c.mu.Unlock()
		c.wakeReader()
	} else {
		c.rown = ownLent
		c.mu.Unlock()
	}
	if err != nil {
		return false
	}
	c.ownReads.Add(1)
	return true
}

// OwnReads returns how many responses their writers read (ReadOwn).
func (c *Conn) OwnReads() int64 { return c.ownReads.Load() }

// borrowLocked runs in sendLocked, with wmu and mu held, for a request
// about to join the pending queue. It lends the read to the request's
// writer when it asked (want), the read is lent and nothing else is
// pending, returning the grant's token; any other request takes a lent
// read back for the reader goroutine.
func (c *Conn) borrowLocked(want bool) uint64 {
	if c.rown != ownLent {
		return 0 // the reader reads, or a borrower hands the read back after its response
	}
	if want && len(c.pending) == 0 {
		c.rown = ownBorrowed
		c.rreading = false
		c.lendID++
		c.grantTick = c.rticks
		c.lendGrants++
		return c.lendID
	}
	c.rown = ownReader
	c.wakeReader()
	return 0
}

// wakeReader makes a parked reader goroutine look at rown (non-blocking;
// wakes coalesce).
func (c *Conn) wakeReader() {
	select {
	case c.rwake <- struct{}{}:
	default:
	}
}

// awaitRead runs on the reader goroutine before each read. With nothing
// pending it lends the read (unless backing off) and parks until the read
// is its own again. It returns the connection's death, if any, once the
// reader owns the read.
func (c *Conn) awaitRead() error {
	c.mu.Lock()
	if c.dead != nil || len(c.pending) > 0 {
		dead := c.dead
		c.mu.Unlock()
		return dead
	}
	if c.peek == nil {
		c.mu.Unlock()
		return nil // no way to watch a socket nobody reads (TLS; see peerGone)
	}
	if c.lendSkip > 0 {
		c.lendSkip--
		c.mu.Unlock()
		return nil
	}
	c.rown = ownLent
	c.rticks, c.lendGrants, c.seenGrants = 0, 0, 0
	c.lends++
	if c.rtimer == nil {
		c.rtimer = time.NewTimer(time.Duration(lendTick.Load()))
	} else {
		c.rtimer.Reset(time.Duration(lendTick.Load()))
	}
	for {
		c.mu.Unlock()
		tick := false
		select {
		case <-c.rwake:
		case <-c.rtimer.C:
			tick = true
		}
		c.mu.Lock()
		c.recallLocked(tick)
		if c.rown == ownReader {
			break
		}
		if tick {
			c.rtimer.Reset(time.Duration(lendTick.Load()))
		}
	}
	c.rtimer.Stop()
	if c.lendGrants == 0 {
		c.lendWaste = min(c.lendWaste+1, maxLendWaste)
		c.lendSkip = 1 << c.lendWaste
	} else {
		c.lendWaste = 0
	}
	dead := c.dead
	c.mu.Unlock()
	return dead
}

// recallLocked takes the read back for the reader goroutine when it
// should (see the file comment); tick says the recall timer fired.
func (c *Conn) recallLocked(tick bool) {
	if tick {
		c.rticks++
	}
	switch c.rown {
	case ownLent:
		if c.dead != nil || tick && c.lendGrants == c.seenGrants {
			c.rown = ownReader
		}
	case ownBorrowed:
		switch {
		case c.rreading && c.dead != nil:
			c.rown = ownRecalling // the dead socket ends the read
		case !c.rreading && (c.dead != nil || c.rticks >= c.grantTick+2):
			c.rown = ownReader // the borrower's ReadOwn finds its token stale
		}
	}
	if tick {
		c.seenGrants = c.lendGrants
	}
}

// readOne reads, decodes and completes the response at the head of the
// pending queue. Its caller holds the read (the reader goroutine, or the
// borrower in ReadOwn); done runs on the caller's goroutine.
func (c *Conn) readOne() error {
	body, err := readFrame(c.br, c.rbuf)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if len(c.pending) == 0 {
		c.mu.Unlock()
		return errors.New("response with no request pending")
	}
	cl := c.pending[0]
	// Shift rather than reslice: at most a few requests are pending
	// (MaxInflight), and the array is reused from its start.
	n := copy(c.pending, c.pending[1:])
	c.pending[n] = call{}
	c.pending = c.pending[:n]
	if n > 0 {
		c.nc.SetReadDeadline(c.pending[0].deadline)
	} else {
		c.nc.SetReadDeadline(time.Time{})
		if cap(c.pending) > maxKeptPending {
			c.pending = nil // let a burst's array go
		}
		c.signalIdleLocked()
		c.touch() // the idle period starts with the last response
	}
	c.mu.Unlock()
	resp, derr := decode(&cl, body)
	if derr != nil {
		cl.done(nil, fmt.Errorf("%w: decode response from %s: %v", ErrMaybeDelivered, c.addr, derr))
		return derr
	}
	cl.done(resp, nil)
	// A decoded response may alias its frame (kmsg keeps unknown tagged
	// fields, and some byte fields, as subslices). The engine is done with
	// a produce response once done returns; other responses are handed to
	// their callers, so their frames are not reused.
	c.rbuf = nil
	if cl.req.Key() == int16(kmsg.Produce) && cap(body) <= maxKeptReadBuf {
		c.rbuf = body
	}
	return nil
}

// readErr is the connection's death for a failed read: a timeout is
// ErrRequestTimeout.
func readErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ErrRequestTimeout
	}
	return err
}
