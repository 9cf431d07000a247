package wire_test

import (
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/internal/wire"
)

// usePollWait turns poll waits on for the test, or skips it where they do
// not exist.
func usePollWait(t *testing.T) {
	t.Helper()
	if !wire.PollWaitSupported {
		t.Skip("no poll waits on this platform")
	}
	wire.UsePollWait(t, true)
}

// waitPolling waits until a borrower of c is in its read and has entered
// its poll wait (the count goes up just before the syscall; the broker
// holds the response, so the poll is the only place it can be after a
// few milliseconds).
func waitPolling(t *testing.T, c *wire.Conn) {
	t.Helper()
	waitReading(t, c)
	deadline := time.Now().Add(waitTimeout)
	for {
		if n, _ := wire.PollWaits(c); n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the borrower never entered its poll wait")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(5 * time.Millisecond)
}

// TestPollWait_OwnReadCases runs the lent-read cases with poll waits on:
// the same outcomes whether the borrower parks in the network poller or
// blocks in ppoll (Close, the broker's close and the request timeout
// during the wait; another request joining; concurrent borrowers; the
// recall of a read never started; the broker gone while lent).
func TestPollWait_OwnReadCases(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"LoneRequest", TestOwnRead_LoneRequestReadOnCallersGoroutine},
		{"OtherRequestJoinsMidRead", TestOwnRead_OtherRequestJoinsMidRead},
		{"ConcurrentBorrowersAndOthers", TestOwnRead_ConcurrentBorrowersAndOthers},
		{"CloseDuringLentRead", TestOwnRead_CloseDuringLentRead},
		{"BrokerDropsConnectionDuringLentRead", TestOwnRead_BrokerDropsConnectionDuringLentRead},
		{"TimeoutDuringLentRead", TestOwnRead_TimeoutDuringLentRead},
		{"RecalledWhenReadNeverStarts", TestOwnRead_RecalledWhenReadNeverStarts},
		{"BrokerGoneWhileLentIsNotWritten", TestOwnRead_BrokerGoneWhileLentIsNotWritten},
	} {
		t.Run(tc.name, func(t *testing.T) {
			usePollWait(t)
			tc.f(t)
		})
	}
}

// TestPollWait_EveryOwnReadPolls: with poll waits on, each lent read
// whose response has not arrived waits in one poll, and reads its
// response after it.
func TestPollWait_EveryOwnReadPolls(t *testing.T) {
	usePollWait(t)
	_, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{})
	const n = 20
	for i := range n {
		lend, r := doLent(t, c)
		if !c.ReadOwn(lend) || r.err != nil {
			t.Fatalf("request %d: ReadOwn failed (err %v)", i, r.err)
		}
	}
	// A response can beat the borrower to its read (then no poll), but
	// not the twenty: the broker is another goroutine.
	if polls, _ := wire.PollWaits(c); polls == 0 || polls > n {
		t.Fatalf("%d own reads made %d polls, want 1 to %d", n, polls, n)
	}
	if got := c.OwnReads(); got != n {
		t.Fatalf("OwnReads = %d, want %d", got, n)
	}
}

// TestPollWait_CloseEndsPoll: Close while the borrower is blocked in its
// poll ends the poll (closing the fd would not) and Close returns; the
// request gets its one outcome, maybe delivered.
func TestPollWait_CloseEndsPoll(t *testing.T) {
	usePollWait(t)
	cl, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{}) // request timeout 30 s: only the kill can end the poll in time
	held, _ := holdFirst(t, cl, kmsg.Metadata)
	lend, r := doLent(t, c)
	readDone := make(chan bool, 1)
	go func() { readDone <- c.ReadOwn(lend) }()
	recv(t, held, "the broker holding the lent request")
	waitPolling(t, c)
	closeConn(t, c) // bounded: fails the test if Close waits for the poll
	if recv(t, readDone, "ReadOwn after Close") {
		t.Fatal("ReadOwn read a response from a closed connection")
	}
	if _, err := r.wait(t, "the outcome after Close"); !errors.Is(err, wire.ErrMaybeDelivered) {
		t.Fatalf("err = %v, want ErrMaybeDelivered", err)
	}
	if n := r.calls.Load(); n != 1 {
		t.Fatalf("done ran %d times", n)
	}
	requireClosed(t, c.Done(), "Done")
}

// TestPollWait_DeadlineEndsPoll: a broker that never answers ends the poll
// at the request's read deadline: ErrRequestTimeout, from the poll path.
func TestPollWait_DeadlineEndsPoll(t *testing.T) {
	usePollWait(t)
	cl, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{RequestTimeout: 300 * time.Millisecond})
	held, _ := holdFirst(t, cl, kmsg.Metadata)
	lend, r := doLent(t, c)
	readDone := make(chan bool, 1)
	go func() { readDone <- c.ReadOwn(lend) }()
	recv(t, held, "the broker holding the request")
	if recv(t, readDone, "ReadOwn at the request timeout") {
		t.Fatal("ReadOwn read a response")
	}
	if polls, _ := wire.PollWaits(c); polls == 0 {
		t.Fatal("the borrower never polled")
	}
	_, err := r.wait(t, "the outcome")
	if !errors.Is(err, wire.ErrMaybeDelivered) || !errors.Is(err, wire.ErrRequestTimeout) {
		t.Fatalf("err = %v, want ErrMaybeDelivered and ErrRequestTimeout", err)
	}
	requireClosed(t, c.Done(), "Done after the timeout")
}

// TestPollWait_SignalsDoNotEndWait: signals to the waiting thread
// interrupt ppoll (EINTR); the borrower polls again and reads its
// response once the broker answers.
func TestPollWait_SignalsDoNotEndWait(t *testing.T) {
	usePollWait(t)
	wire.RecordPollThreads(t)
	cl, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{})
	held, release := holdFirst(t, cl, kmsg.Metadata)
	lend, r := doLent(t, c)
	readDone := make(chan bool, 1)
	go func() { readDone <- c.ReadOwn(lend) }()
	recv(t, held, "the broker holding the lent request")
	waitPolling(t, c)
	_, tid := wire.PollWaits(c)
	for range 3 {
		// SIGURG: the runtime's preemption signal, ignored by a thread in
		// a syscall, and never fatal.
		if err := syscall.Tgkill(os.Getpid(), int(tid), syscall.SIGURG); err != nil {
			t.Fatalf("tgkill: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	polls, _ := wire.PollWaits(c)
	release()
	if !recv(t, readDone, "ReadOwn") || r.err != nil {
		t.Fatalf("ReadOwn failed (err %v)", r.err)
	}
	if polls < 2 {
		t.Fatalf("%d polls after signals to the waiting thread, want the wait resumed in a poll", polls)
	}
}

// TestPollWait_RecallTimerLeavesPollingBorrower: recall timer ticks while
// the borrower waits in its poll do not take the read back; the borrower
// reads its own response when it comes.
func TestPollWait_RecallTimerLeavesPollingBorrower(t *testing.T) {
	usePollWait(t)
	cl, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{})
	held, release := holdFirst(t, cl, kmsg.Metadata)
	lend, r := doLent(t, c)
	readDone := make(chan bool, 1)
	go func() { readDone <- c.ReadOwn(lend) }()
	recv(t, held, "the broker holding the lent request")
	waitPolling(t, c)
	// From the next tick on (within 10 ms) the timer ticks every
	// millisecond; a grant whose read had not started would be recalled
	// after two.
	wire.SetLendTick(t, time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	if !wire.Reading(c) {
		t.Fatal("the read was taken from the polling borrower")
	}
	release()
	if !recv(t, readDone, "ReadOwn") || r.err != nil {
		t.Fatalf("ReadOwn failed (err %v)", r.err)
	}
	if n := r.calls.Load(); n != 1 {
		t.Fatalf("done ran %d times", n)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("connection died: %v", err)
	}
}
