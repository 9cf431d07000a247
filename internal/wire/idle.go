package wire

// Closing idle connections before the broker does.
//
// Ownership: the timer's function runs on its own goroutine (time.AfterFunc)
// and only ever closes the connection while holding wmu (TryLock: a busy
// writer means the connection is in use) and with the pending queue empty
// under mu, so nothing is in flight and no write can start meanwhile: a
// later Do finds the connection dead and returns ErrConnClosed (not
// written). idleTimer is an atomic pointer, set once in Dial (Stop and
// Reset are safe concurrently).

import (
	"errors"
	"time"

	"github.com/kpush/kpush/internal/clock"
)

// ErrIdle is the error of a connection kpush closed because nothing was
// sent or received on it for Config.IdleTimeout. Nothing was in flight;
// the next request needs a new connection.
var ErrIdle = errors.New("connection closed after being idle")

// touch records activity on the connection.
func (c *Conn) touch() { c.lastUse.Store(clock.Mono()) }

// startIdleTimer arms the idle check when Config.IdleTimeout is set.
func (c *Conn) startIdleTimer() {
	if c.cfg.IdleTimeout <= 0 {
		return
	}
	// Created stopped, stored, then started: checkIdle always finds it.
	t := time.AfterFunc(time.Hour, c.checkIdle)
	t.Stop()
	c.idleTimer.Store(t)
	t.Reset(c.cfg.IdleTimeout)
	if c.Err() != nil {
		t.Stop() // died meanwhile; its reader may have missed the timer
	}
}

// stopIdleTimer stops the idle check of a dead connection.
func (c *Conn) stopIdleTimer() {
	if t := c.idleTimer.Load(); t != nil {
		t.Stop()
	}
}

// checkIdle closes the connection if it has been idle for IdleTimeout with
// nothing in flight, and otherwise checks again when it could be.
func (c *Conn) checkIdle() {
	idle := c.cfg.IdleTimeout
	t := c.idleTimer.Load()
	closed := false
	if h := c.cfg.testHookIdleCheck; h != nil {
		defer func() { h(closed) }()
	}
	if !c.wmu.TryLock() {
		t.Reset(idle) // a write (or SASL exchange) is under way
		return
	}
	defer c.wmu.Unlock()
	if c.renewing != nil {
		t.Reset(idle) // a renewal is getting credentials with wmu released
		return
	}
	c.mu.Lock()
	if c.dead != nil {
		c.mu.Unlock()
		return
	}
	if len(c.pending) > 0 {
		c.mu.Unlock()
		t.Reset(idle) // the last response restarts the period
		return
	}
	if left := time.Duration(c.lastUse.Load() + int64(idle) - clock.Mono()); left > 0 {
		c.mu.Unlock()
		t.Reset(left)
		return
	}
	c.dead = ErrIdle
	closed = true
	c.mu.Unlock()
	c.wakeReader() // a reader that lent the read is parked (ownread.go)
	c.nc.Close()   // the reader exits with no call to complete
	if c.cfg.OnIdleClose != nil {
		c.cfg.OnIdleClose(c.addr)
	}
}
