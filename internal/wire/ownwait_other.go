//go:build !linux

package wire

import (
	"sync/atomic"
	"syscall"
	"time"
)

// pollSupported: no poll wait on this platform; borrowers park in the
// network poller as every other read does.
const pollSupported = false

type poller struct {
	polls atomic.Int64
	tid   atomic.Int32
}

var recordTid atomic.Bool

func newPoller(syscall.RawConn) *poller { return nil }

func (*poller) waitReadable(time.Time) {}

func (*poller) interrupt() {}
