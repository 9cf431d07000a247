//go:build unix

package wire

import (
	"errors"
	"io"
	"syscall"
)

// probeSupported: peerGone works on this platform.
const probeSupported = true

// peeker is a connection's non-blocking look at its socket. Its peek
// method value is made once per connection (newPeeker), so a look
// allocates nothing; its fields are written by peek and read right after
// by peerGone, both under Conn.mu.
type peeker struct {
	raw  syscall.RawConn
	fn   func(fd uintptr) bool // p.peek
	b    [1]byte
	n    int
	rerr error
}

func newPeeker(raw syscall.RawConn) *peeker {
	p := &peeker{raw: raw}
	p.fn = p.peek
	return p
}

func (p *peeker) peek(fd uintptr) bool {
	for {
		// No MSG_DONTWAIT (AIX's syscall package lacks it): Go's network
		// sockets are non-blocking, so an empty socket gives EAGAIN.
		p.n, _, p.rerr = syscall.Recvfrom(int(fd), p.b[:], syscall.MSG_PEEK)
		if p.rerr != syscall.EINTR {
			return true
		}
	}
}

// peerGone looks at a socket nobody is reading (the read is lent, not
// borrowed) without blocking: nil when it is alive with nothing to read;
// io.EOF when the broker closed it, the socket's error when it was reset,
// and an error when a frame arrived with no request pending. One
// non-blocking recv with MSG_PEEK, which consumes nothing. Under Conn.mu.
func (p *peeker) peerGone() error {
	if err := p.raw.Read(p.fn); err != nil {
		return err
	}
	switch {
	case p.rerr == syscall.EAGAIN || p.rerr == syscall.EWOULDBLOCK:
		return nil
	case p.rerr != nil:
		return p.rerr
	case p.n == 0:
		return io.EOF
	}
	return errors.New("data from the broker with no request pending")
}
