package wire

// Connection events for the producer's observability hooks (the root
// package's HookConn… and HookAuth). Config.OnEvent runs with no Conn lock
// held: opened and failed on the dialing goroutine (Dial), closed on the
// connection's reader goroutine as it exits (after every pending call is
// complete), authenticated on the goroutine that authenticated, once it
// released wmu.

import (
	"context"
	"errors"
)

// EventKind says what happened to a connection.
type EventKind uint8

// The connection events.
const (
	ConnOpened    EventKind = iota + 1 // Dial succeeded
	ConnClosed                         // a connection that Dial returned died or was closed
	ConnFailed                         // Dial failed
	Authenticated                      // a SASL exchange finished, or TLS/SASL failed (Err wraps ErrAuth)
)

// Event is one connection event.
type Event struct {
	Kind   EventKind
	Node   int32 // from WithNode; -1 when the dialer gave none
	Addr   string
	Reauth bool // Authenticated: a re-authentication (KIP-368)
	Err    error
}

type nodeKey struct{}

// WithNode returns ctx carrying the broker node id that Dial reports in
// its events.
func WithNode(ctx context.Context, node int32) context.Context {
	return context.WithValue(ctx, nodeKey{}, node)
}

func nodeOf(ctx context.Context) int32 {
	if n, ok := ctx.Value(nodeKey{}).(int32); ok {
		return n
	}
	return -1
}

// Connection states for exactly one ConnClosed per ConnOpened (Conn.state).
const (
	stateDialing = iota
	stateOpen
	stateGone
)

// Dial connects to addr (with TLS when cfg.TLS is set), negotiates API
// versions, starts the reader goroutine and authenticates with cfg.SASL.
// Only an explicit rejection (a SASL error code, a TLS alert or an
// untrusted certificate) wraps ErrAuth; a connection the broker closes
// during the SASL exchange wraps ErrSASLClosed and is worth retrying (a
// broker restart looks the same). Config.OnEvent hears of the outcome.
func Dial(ctx context.Context, addr string, cfg *Config) (*Conn, error) {
	node := nodeOf(ctx)
	c, err := dial(ctx, addr, cfg, node)
	if cfg.OnEvent == nil {
		return c, err
	}
	if err != nil {
		cfg.OnEvent(Event{Kind: ConnFailed, Node: node, Addr: addr, Err: err})
		return nil, err
	}
	cfg.OnEvent(Event{Kind: ConnOpened, Node: node, Addr: addr})
	if !c.state.CompareAndSwap(stateDialing, stateOpen) {
		// The reader already exited (and reported nothing): report the
		// close after the open.
		c.mu.Lock()
		dead := c.dead
		c.mu.Unlock()
		cfg.OnEvent(Event{Kind: ConnClosed, Node: node, Addr: addr, Err: dead})
	}
	return c, nil
}

// closed reports the connection's end, on the reader goroutine as it exits.
func (c *Conn) closed(dead error) {
	if c.cfg.OnEvent != nil && c.state.Swap(stateGone) == stateOpen {
		c.cfg.OnEvent(Event{Kind: ConnClosed, Node: c.node, Addr: c.addr, Err: dead})
	}
}

// authLocked records an authentication result (err nil, or wrapping
// ErrAuth) for unlockWrite to report once wmu is released; it returns err.
// c.wmu is held.
func (c *Conn) authLocked(reauth bool, err error) error {
	if err == nil || errors.Is(err, ErrAuth) {
		c.authEv = &Event{Kind: Authenticated, Node: c.node, Addr: c.addr, Reauth: reauth, Err: err}
	}
	return err
}

// unlockWrite releases wmu, then reports an authentication recorded under
// it to Config.AuthHook and Config.OnEvent.
func (c *Conn) unlockWrite() {
	ev := c.authEv
	c.authEv = nil
	c.wmu.Unlock()
	if ev == nil {
		return
	}
	if c.cfg.AuthHook != nil {
		c.cfg.AuthHook(c.addr, ev.Reauth, ev.Err)
	}
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(*ev)
	}
}
