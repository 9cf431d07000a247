// Package faultproxy is a TCP proxy that can cut, delay or black-hole the
// traffic it forwards, for fault tests against real brokers: each broker's
// client listener is advertised at a proxy's address, so every byte a
// client exchanges with that broker passes through it, while inter-broker
// and controller traffic use their own listeners and are not affected.
//
// Goroutines: one accept loop per Proxy (started by New, exits when Close
// closes the listener) and two pumps per proxied connection (client→target
// and target→client; each exits when either side of its copy fails, and
// closes both sockets so its partner exits too). Every goroutine is counted
// by Proxy.wg, which Close waits for. A tap (SetTap) is called from the
// pumps, one call at a time per direction of a connection.
//
// Locking: Proxy.mu guards conns (the live connections) and closed. The
// mode and the tap are atomics read by the pumps without the lock. Each
// pump owns its connection direction's framer. Nothing nests.
package faultproxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what a proxy does with the traffic it receives.
type Mode int32

const (
	// Pass forwards traffic unchanged.
	Pass Mode = iota
	// Cut closes every connection and closes new ones as soon as they are
	// accepted: the peer sees connection resets and refusals.
	Cut
	// BlackHole keeps connections open and accepts new ones but forwards
	// nothing in either direction: the peer sees silence, as behind a
	// dropped route. Connections that swallowed bytes are closed when the
	// mode leaves BlackHole (their byte stream is no longer intact).
	BlackHole
	// Delay forwards traffic after the proxy's delay (SetDelay), in order.
	Delay
)

// String names the mode.
func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Cut:
		return "cut"
	case BlackHole:
		return "black hole"
	case Delay:
		return "delay"
	}
	return fmt.Sprintf("mode(%d)", int32(m))
}

// ErrClosed is returned by Set after Close.
var ErrClosed = errors.New("faultproxy: proxy closed")

// ErrBadMode is returned by Set for a mode that is not one of the constants.
var ErrBadMode = errors.New("faultproxy: unknown mode")

// Proxy forwards connections accepted on its address to one target
// address. It is safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string
	mode   atomic.Int32
	delay  atomic.Int64 // nanoseconds, for Delay
	done   chan struct{}
	wg     sync.WaitGroup

	accepted atomic.Int64
	dropped  atomic.Int64 // bytes swallowed by BlackHole
	tap      atomic.Pointer[Tap]
	nextConn atomic.Uint64

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
}

// conn is one proxied connection: the client's socket and the target's.
type conn struct {
	id             uint64
	tap            Tap // nil: not framed
	client, server net.Conn
	swallowed      atomic.Bool // BlackHole discarded some of its bytes
	once           sync.Once
}

func (c *conn) close() {
	c.once.Do(func() {
		c.client.Close()
		c.server.Close()
	})
}

// New starts a proxy on 127.0.0.1 (a free port) forwarding to target.
func New(target string) (*Proxy, error) {
	return Listen("127.0.0.1:0", target)
}

// Listen starts a proxy on addr forwarding to target.
func Listen(addr, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen %s: %w", addr, err)
	}
	p := &Proxy{ln: ln, target: target, done: make(chan struct{}), conns: map[*conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's "host:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port is the proxy's port.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Accepted counts connections accepted so far (including ones Cut closed).
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Conns is the number of proxied connections open now.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Swallowed counts bytes BlackHole discarded so far.
func (p *Proxy) Swallowed() int64 { return p.dropped.Load() }

// Mode returns the current mode.
func (p *Proxy) Mode() Mode { return Mode(p.mode.Load()) }

// SetDelay sets the delay used in Delay mode (default 0).
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// Set switches the proxy to mode m. Cut closes every open connection;
// leaving BlackHole closes the connections that lost bytes.
func (p *Proxy) Set(m Mode) error {
	if m < Pass || m > Delay {
		return fmt.Errorf("%w: %d", ErrBadMode, int32(m))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	old := Mode(p.mode.Swap(int32(m)))
	for c := range p.conns {
		if m == Cut || (old == BlackHole && m != BlackHole && c.swallowed.Load()) {
			c.close()
		}
	}
	return nil
}

// Close stops accepting, closes every connection and waits for the
// proxy's goroutines to exit.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	err := p.ln.Close()
	for c := range p.conns {
		c.close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		cl, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.accepted.Add(1)
		if p.Mode() == Cut {
			cl.Close()
			continue
		}
		srv, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			cl.Close() // target down: the client sees a reset, as it would direct
			continue
		}
		c := &conn{id: p.nextConn.Add(1), client: cl, server: srv}
		if tap := p.tap.Load(); tap != nil {
			c.tap = *tap
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.close()
			return
		}
		p.conns[c] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pump(c, cl, srv, ToTarget)
		go p.pump(c, srv, cl, ToClient)
	}
}

// pump copies from src to dst according to the mode until either fails.
func (p *Proxy) pump(c *conn, src, dst net.Conn, dir Direction) {
	defer p.wg.Done()
	defer func() {
		c.close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	var fr *framer
	if c.tap != nil {
		fr = &framer{tap: c.tap, conn: c.id, dir: dir}
	}
	for {
		n, err := src.Read(buf)
		if n > 0 {
			mode := p.Mode()
			if fr != nil && mode != BlackHole && mode != Cut {
				fr.feed(buf[:n], time.Now())
			}
			switch mode {
			case Cut:
				return
			case BlackHole:
				c.swallowed.Store(true)
				p.dropped.Add(int64(n))
				n = 0
			case Delay:
				if d := time.Duration(p.delay.Load()); d > 0 {
					t := time.NewTimer(d)
					select {
					case <-t.C:
					case <-p.done:
						t.Stop()
						return
					}
				}
			}
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return // EOF or a closed socket: either ends the connection
		}
	}
}
