package wire

// Request deadlines, armed coarsely: a deadline change is a runtime timer
// change, and with one request at a time (C=1) setting the write deadline
// per request and the read deadline at every request and response was
// three per request. Deadlines are now armed up to a grain after the time
// they bound and re-armed only when a request needs a later one. wdl is
// guarded by Conn.wmu, rdl by Conn.mu.

import (
	"errors"
	"net"
	"time"
)

// deadlineGrain is how late, at most, a request timeout is noticed: read
// and write deadlines are armed up to this much after the time they bound,
// so that one armed deadline covers every request sent within a grain (a
// deadline change is a runtime timer change; at one request at a time it
// was three per request).
func (c *Conn) deadlineGrain() time.Duration {
	return min(time.Second, c.requestTimeout()/16)
}

// armReadLocked makes the read deadline bound the head pending call's
// deadline d (with c.mu held): it fires no earlier than d and at most a
// grain after it. The deadline is left armed when the queue empties, so
// it can fire with nothing due (staleDeadline); it never fires early for
// a pending call, so no response is ever cut short by it.
func (c *Conn) armReadLocked(d time.Time) {
	grain := c.deadlineGrain()
	if !c.rdl.Before(d) && c.rdl.Sub(d) <= grain {
		return
	}
	c.rdl = d.Add(grain)
	c.nc.SetReadDeadline(c.rdl)
}

// staleDeadline reports whether a read error is the read deadline firing
// with no pending call due: it was armed for calls answered since. Nothing
// was being read then (no call was pending when it fired, or the call
// appended meanwhile re-armed it before being written), so the reader
// just goes on reading.
func (c *Conn) staleDeadline(err error) bool {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead != nil {
		return false
	}
	if len(c.pending) > 0 {
		if !time.Now().Before(c.pending[0].deadline) {
			return false // a real timeout
		}
		c.armReadLocked(c.pending[0].deadline)
		return true
	}
	c.rdl = time.Time{}
	c.nc.SetReadDeadline(time.Time{})
	return true
}
