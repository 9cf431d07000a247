package wire

// Poll waits: a borrower waits for its response in a poll syscall.
//
// A borrower in ReadOwn whose response has not arrived used to park its
// goroutine in the network poller (the read gets EAGAIN): at one request
// at a time the runtime then runs the scheduler on its thread (look for
// work, steal, spin, sleep in epoll_wait or a futex) and, when the
// response arrives, wakes a thread and a P to run the borrower again.
// With poll waits (SetPollWait, Linux only: ownwait_linux.go) the
// borrower instead blocks its thread in one ppoll(2) on the socket,
// bounded by its request's read deadline, then reads: the runtime sees a
// syscall; the P stays with the thread unless sysmon hands it off (after
// 20 µs–10 ms, and only when other goroutines wait for it).
//
// Goroutines and ownership:
//   - The poller (Conn.pw) belongs to the borrower while it is in ReadOwn
//     with rreading set; nobody else polls or reads the socket then.
//   - Closing an fd does not wake a poll on it, and Go's Close waits for
//     the fd's users (the borrower's RawConn.Read) to finish. So fail,
//     the only path that closes the socket while a borrower may be in its
//     read (idle closing needs nothing pending; the reader goroutine
//     closes only once it owns the read), first shuts the socket's read
//     side down (shutdown(2), interrupt), which wakes the poll: it sees
//     rreading under mu, in the same critical section that sets dead, and
//     a borrower sets rreading only while dead is nil, so no poll can
//     start unseen on a socket that is about to close.
//   - TLS and SASL connections never lend their read (see ownread.go), so
//     they never poll either.

import "sync/atomic"

// pollWait: borrowers wait in a poll syscall (true) or in the network
// poller (false). Read once per ReadOwn.
var pollWait atomic.Bool

// PollWaitSupported reports whether poll waits work on this platform
// (Linux); elsewhere SetPollWait has no effect.
const PollWaitSupported = pollSupported

// SetPollWait chooses how every connection's borrowers wait for their
// response when it has not arrived yet: in one poll syscall on the socket
// (on), or parked in Go's network poller (off). It returns the previous
// setting. For experiments and tests (bench's kpush/pollwait); not part of
// kpush's API.
func SetPollWait(on bool) (was bool) { return pollWait.Swap(on) }
