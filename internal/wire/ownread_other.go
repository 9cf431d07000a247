//go:build !unix

package wire

import (
	"errors"
	"syscall"
)

// probeSupported: without a non-blocking peek nobody could watch a socket
// whose read is lent, so the reader never lends it on this platform.
const probeSupported = false

type peeker struct{}

func newPeeker(syscall.RawConn) *peeker { return &peeker{} }

func (*peeker) peerGone() error { return errors.New("no probe on this platform") }
