//go:build unix

package wire

import (
	"errors"
	"io"
	"syscall"
)

// probeSupported: peerGone works on this platform.
const probeSupported = true

// peerGone looks at a socket nobody is reading (the read is lent, not
// borrowed) without blocking: nil when it is alive with nothing to read;
// io.EOF when the broker closed it, the socket's error when it was reset,
// and an error when a frame arrived with no request pending. One
// non-blocking recv with MSG_PEEK, which consumes nothing.
func peerGone(raw syscall.RawConn) error {
	var b [1]byte
	var n int
	var rerr error
	if err := raw.Read(func(fd uintptr) bool {
		for {
			n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if rerr != syscall.EINTR {
				return true
			}
		}
	}); err != nil {
		return err
	}
	switch {
	case rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK:
		return nil
	case rerr != nil:
		return rerr
	case n == 0:
		return io.EOF
	}
	return errors.New("data from the broker with no request pending")
}
