//go:build linux

package wire

import (
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// pollSupported: the borrower's poll wait works on this platform.
const pollSupported = true

// pollFd is struct pollfd.
type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

const pollIn = 0x1 // POLLIN

// poller blocks a borrower's thread in ppoll(2) on its socket. Its fields
// are the borrower's while it waits (ownwait.go); fn is made once per
// connection, and the pollfd and timespec live here, so a wait allocates
// nothing.
type poller struct {
	raw   syscall.RawConn
	fn    func(fd uintptr) bool // p.wait
	until time.Time             // end of the wait (the read deadline)
	pfd   pollFd
	ts    syscall.Timespec
	polls atomic.Int64 // ppoll calls made (tests)
	tid   atomic.Int32 // the waiting thread, when recordTid (tests)
}

// recordTid makes waits record their thread (tests: signals to a waiting
// thread).
var recordTid atomic.Bool

func newPoller(raw syscall.RawConn) *poller {
	p := &poller{raw: raw}
	p.fn = p.wait
	return p
}

// waitReadable blocks until the socket has something to read (data, the
// peer's close or reset, a shutdown by interrupt) or until passes, at the
// latest. What it found is for the read after it to see: it reports
// nothing itself. Called by the borrower, after the runtime's own
// deadline and closed checks (RawConn.Read), which end it at once when
// either applies.
func (p *poller) waitReadable(until time.Time) {
	p.until = until
	_ = p.raw.Read(p.fn) // its error is the read's too
}

func (p *poller) wait(fd uintptr) bool {
	p.pfd = pollFd{fd: int32(fd), events: pollIn}
	for {
		tsp := uintptr(0) // no timeout
		if !p.until.IsZero() {
			left := time.Until(p.until)
			if left <= 0 {
				return true // the read reports the timeout
			}
			p.ts = syscall.NsecToTimespec(int64(left))
			tsp = uintptr(unsafe.Pointer(&p.ts))
		}
		if recordTid.Load() {
			p.tid.Store(int32(syscall.Gettid()))
		}
		p.polls.Add(1)
		// syscall.Syscall6, not RawSyscall: the runtime sees a blocking
		// syscall, so sysmon may hand the P to other goroutines.
		_, _, errno := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&p.pfd)), 1, tsp, 0, 0, 0)
		if errno != syscall.EINTR {
			return true // ready, timed out, or an error the read will meet
		}
		// A signal (the profiler's SIGPROF, say): wait again for what is left.
	}
}

// interrupt wakes a waitReadable in progress, or makes the next return at
// once: it shuts the socket's read side down, which a poll sees as
// readable. For a connection about to be closed (fail).
func (p *poller) interrupt() {
	_ = p.raw.Control(func(fd uintptr) {
		_ = syscall.Shutdown(int(fd), syscall.SHUT_RD)
	})
}
