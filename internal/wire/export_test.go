package wire

import "time"

// Test seams for package wire_test.

// SetReauthWaitingHook makes f run whenever a re-authentication on a
// connection dialed with cfg starts waiting for in-flight requests.
func SetReauthWaitingHook(cfg *Config, f func()) { cfg.testHookReauthWaiting = f }

// ExpireSession makes c's SASL session due for renewal now, as if its
// renewal point had passed.
func ExpireSession(c *Conn) {
	c.wmu.Lock()
	c.reauthAt = 1
	c.renewAt.Store(1)
	c.wmu.Unlock()
}

// EndSession makes c's SASL session due for renewal and already ended,
// as for a connection left idle past its session's end (renewed lazily).
func EndSession(c *Conn) {
	c.wmu.Lock()
	c.reauthAt, c.sessionEnd = 1, 1
	c.renewAt.Store(1)
	c.wmu.Unlock()
}

// Lent reports whether c's reader goroutine has lent the read and nobody
// has taken it (ownread.go).
func Lent(c *Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rown == ownLent
}

// Reading reports whether a borrower is in its read of c (ReadOwn).
func Reading(c *Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rown != ownReader && c.rreading
}

// Lends returns how many times c's reader lent the read, and the current
// backoff exponent (consecutive unused lends).
func Lends(c *Conn) (lends uint64, waste uint8) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lends, c.lendWaste
}

// SetLendTick sets the period of every reader's recall timer (ownread.go)
// until the test ends; for tests that must act within one lend.
func SetLendTick(t interface{ Cleanup(func()) }, d time.Duration) {
	old := lendTick.Swap(int64(d))
	t.Cleanup(func() { lendTick.Store(old) })
}
