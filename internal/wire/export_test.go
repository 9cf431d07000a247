package wire

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
