//go:build !unix

package wire

import (
	"errors"
	"syscall"
)

// probeSupported: without a non-blocking peek nobody could watch a socket
// whose read is lent, so the reader never lends it on this platform.
const probeSupported = false

func peerGone(syscall.RawConn) error { return errors.New("no probe on this platform") }
