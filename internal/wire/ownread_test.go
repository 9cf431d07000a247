package wire_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/internal/wire"
)

// waitLent waits until c's reader goroutine has lent the read.
func waitLent(t *testing.T, c *wire.Conn) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !wire.Lent(c) {
		if time.Now().After(deadline) {
			t.Fatal("the reader never lent the read")
		}
		time.Sleep(time.Millisecond)
	}
}

// waitReading waits until a borrower is in its read of c.
func waitReading(t *testing.T, c *wire.Conn) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !wire.Reading(c) {
		if time.Now().After(deadline) {
			t.Fatal("the borrower never started its read")
		}
		time.Sleep(time.Millisecond)
	}
}

// doLent issues a metadata request with DoOwnRead once the read is lent,
// and returns the lend's token and the request's result. While the
// reader backs off (or a recall timer tick on a busy machine took the
// lend back) it issues plain requests: each response is a chance to lend.
func doLent(t *testing.T, c *wire.Conn) (uint64, *result) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		if !wire.Lent(c) {
			time.Sleep(time.Millisecond)
			if !wire.Lent(c) {
				r := newResult()
				if err := c.Do(metadataReq("t"), false, r.done); err != nil {
					t.Fatalf("Do: %v", err)
				}
				if _, err := r.wait(t, "a plain response"); err != nil {
					t.Fatal(err)
				}
			}
			continue
		}
		r := newResult()
		lend, err := c.DoOwnRead(metadataReq("t"), time.Hour, r.done)
		if err != nil {
			t.Fatalf("DoOwnRead: %v", err)
		}
		if lend != 0 {
			return lend, r
		}
		if _, err := r.wait(t, "a response the reader read"); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("DoOwnRead was never lent the read")
	return 0, nil
}

// TestOwnRead_LoneRequestReadOnCallersGoroutine: a lone request whose
// caller asked for its read is answered on the caller's goroutine: done
// has run by the time ReadOwn returns, and the read goes back to the lend
// for the next request.
func TestOwnRead_LoneRequestReadOnCallersGoroutine(t *testing.T) {
	_, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{})
	const n = 20
	for i := range n {
		lend, r := doLent(t, c)
		if !c.ReadOwn(lend) {
			t.Fatalf("request %d: ReadOwn read nothing", i)
		}
		if calls := r.calls.Load(); calls != 1 {
			t.Fatalf("request %d: done ran %d times by the end of ReadOwn, want once", i, calls)
		}
		if r.err != nil {
			t.Fatalf("request %d: %v", i, r.err)
		}
		if c.ReadOwn(lend) {
			t.Fatalf("request %d: a second ReadOwn with the same token read again", i)
		}
	}
	if got := c.OwnReads(); got != n {
		t.Fatalf("OwnReads = %d, want %d", got, n)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("connection died: %v", err)
	}
}

// TestOwnRead_NotLentWhenCallerCannotWaitTheTimeout: a caller that may not
// block for a whole request timeout is never lent the read.
func TestOwnRead_NotLentWhenCallerCannotWaitTheTimeout(t *testing.T) {
	_, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{RequestTimeout: time.Second})
	for i := range 3 {
		if i > 0 {
			lend, r := doLent(t, c) // one that may wait: lent, read
			if !c.ReadOwn(lend) || r.err != nil {
				t.Fatalf("round %d: the caller that may wait was not answered: %v", i, r.err)
			}
		}
		waitLent(t, c)
		r := newResult()
		lend, err := c.DoOwnRead(metadataReq("t"), 500*time.Millisecond, r.done)
		if err != nil {
			t.Fatal(err)
		}
		if lend != 0 {
			t.Fatalf("round %d: lent with 500ms to wait and a 1s request timeout", i)
		}
		if _, err := r.wait(t, "the reader's answer"); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.OwnReads(); got != 2 {
		t.Fatalf("OwnReads = %d, want 2", got)
	}
}

// holdFirst makes the broker hold the first request of key until release
// is called (or the test ends), reporting it on the returned channel;
// later ones pass.
func holdFirst(t *testing.T, cl *kfake.Cluster, key kmsg.Key) (held <-chan struct{}, release func()) {
	h := make(chan struct{})
	rel := make(chan struct{})
	var once sync.Once
	cl.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
		first := false
		once.Do(func() { first = true })
		if !first {
			return nil, nil, false
		}
		cl.KeepControl()
		close(h)
		cl.SleepControl(func() { <-rel })
		return nil, nil, false
	})
	var relOnce sync.Once
	release = func() { relOnce.Do(func() { close(rel) }) }
	t.Cleanup(release)
	return h, release
}

// TestOwnRead_OtherRequestJoinsMidRead: a request written while a borrower
// waits for its response is answered too: the borrower reads its own
// response, hands the read back, and the reader goroutine reads the other;
// lends resume afterwards.
func TestOwnRead_OtherRequestJoinsMidRead(t *testing.T) {
	cl, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{})
	held, release := holdFirst(t, cl, kmsg.Metadata)
	lend, mine := doLent(t, c)
	readDone := make(chan bool, 1)
	go func() { readDone <- c.ReadOwn(lend) }()
	recv(t, held, "the broker holding the lent request")
	waitReading(t, c)

	other := newResult()
	if err := c.Do(metadataReq("t"), false, other.done); err != nil {
		t.Fatal(err)
	}
	release()
	if !recv(t, readDone, "ReadOwn") {
		t.Fatal("ReadOwn read nothing")
	}
	if mine.calls.Load() != 1 || mine.err != nil {
		t.Fatalf("borrower's done: %d calls, err %v", mine.calls.Load(), mine.err)
	}
	if _, err := other.wait(t, "the request that joined"); err != nil {
		t.Fatal(err)
	}
	if other.calls.Load() != 1 {
		t.Fatalf("other done ran %d times", other.calls.Load())
	}
	lend, r := doLent(t, c) // lending resumes
	if !c.ReadOwn(lend) || r.err != nil {
		t.Fatalf("after the mixed round: ReadOwn failed (err %v)", r.err)
	}
}

// TestOwnRead_ConcurrentBorrowersAndOthers: goroutines mixing DoOwnRead
// and Do get every done exactly once, without errors (run with -race).
func TestOwnRead_ConcurrentBorrowersAndOthers(t *testing.T) {
	_, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{})
	const goroutines, each = 4, 100
	var wg sync.WaitGroup
	var failed atomic.Int32
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				r := newResult()
				if g%2 == 0 {
					lend, err := c.DoOwnRead(metadataReq("t"), time.Hour, r.done)
					if err != nil {
						failed.Add(1)
						return
					}
					c.ReadOwn(lend)
				} else if err := c.Do(metadataReq("t"), false, r.done); err != nil {
					failed.Add(1)
					return
				}
				if _, err := r.wait(t, "a response"); err != nil {
					t.Error(err)
				}
				if n := r.calls.Load(); n != 1 {
					t.Errorf("done ran %d times", n)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d requests not written", failed.Load())
	}
	if err := c.Err(); err != nil {
		t.Fatalf("connection died: %v", err)
	}
	t.Logf("own reads: %d of %d", c.OwnReads(), goroutines/2*each)
}

// TestOwnRead_CloseDuringLentRead: Close while a borrower waits in its
// read ends the read; the request gets its one outcome (may be
// delivered) and the connection is cleanly closed.
func TestOwnRead_CloseDuringLentRead(t *testing.T) {
	cl, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{})
	held, _ := holdFirst(t, cl, kmsg.Metadata)
	lend, r := doLent(t, c)
	readDone := make(chan bool, 1)
	go func() { readDone <- c.ReadOwn(lend) }()
	recv(t, held, "the broker holding the lent request")
	waitReading(t, c)
	closeConn(t, c)
	if recv(t, readDone, "ReadOwn after Close") {
		t.Fatal("ReadOwn read a response from a closed connection")
	}
	_, err := r.wait(t, "the outcome after Close")
	if !errors.Is(err, wire.ErrMaybeDelivered) {
		t.Fatalf("err = %v, want ErrMaybeDelivered", err)
	}
	if n := r.calls.Load(); n != 1 {
		t.Fatalf("done ran %d times", n)
	}
	requireClosed(t, c.Done(), "Done")
}

// TestOwnRead_BrokerDropsConnectionDuringLentRead: the broker closing the
// connection while a borrower waits gives the request its one outcome and
// kills the connection; later requests fail as not written.
func TestOwnRead_BrokerDropsConnectionDuringLentRead(t *testing.T) {
	cl, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{})
	lend, r := doLent(t, c) // before the control: this one is answered
	if !c.ReadOwn(lend) || r.err != nil {
		t.Fatalf("first request: %v", r.err)
	}
	arrived := make(chan struct{})
	cl.ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
		close(arrived)
		time.Sleep(50 * time.Millisecond) // let the borrower enter its read
		return nil, errors.New("drop the connection"), true
	})
	lend, r = doLent(t, c)
	readDone := make(chan bool, 1)
	go func() { readDone <- c.ReadOwn(lend) }()
	recv(t, arrived, "the broker seeing the request")
	if recv(t, readDone, "ReadOwn after the broker dropped the connection") {
		t.Fatal("ReadOwn read a response")
	}
	if _, err := r.wait(t, "the outcome"); !errors.Is(err, wire.ErrMaybeDelivered) {
		t.Fatalf("err = %v, want ErrMaybeDelivered", err)
	}
	requireClosed(t, c.Done(), "Done after the broker dropped the connection")
	if c.Err() == nil {
		t.Fatal("Err() = nil on a dead connection")
	}
	if err := c.Do(metadataReq("t"), false, newResult().done); !errors.Is(err, wire.ErrConnClosed) {
		t.Fatalf("Do on the dead connection: %v, want ErrConnClosed", err)
	}
}

// TestOwnRead_TimeoutDuringLentRead: a broker that never answers ends the
// borrower's read at the request timeout with ErrRequestTimeout.
func TestOwnRead_TimeoutDuringLentRead(t *testing.T) {
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
	_, err := r.wait(t, "the outcome")
	if !errors.Is(err, wire.ErrMaybeDelivered) || !errors.Is(err, wire.ErrRequestTimeout) {
		t.Fatalf("err = %v, want ErrMaybeDelivered and ErrRequestTimeout", err)
	}
	requireClosed(t, c.Done(), "Done after the timeout")
}

// TestOwnRead_RecalledWhenReadNeverStarts: a borrower that does not start
// its read loses it to the reader goroutine, which completes the request;
// the late ReadOwn reads nothing.
func TestOwnRead_RecalledWhenReadNeverStarts(t *testing.T) {
	_, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{})
	lend, r := doLent(t, c)
	if _, err := r.wait(t, "the reader taking the read back"); err != nil {
		t.Fatal(err)
	}
	if c.ReadOwn(lend) {
		t.Fatal("a late ReadOwn read a response the reader had taken")
	}
	if n := r.calls.Load(); n != 1 {
		t.Fatalf("done ran %d times", n)
	}
	lend, r = doLent(t, c) // the connection still lends
	if !c.ReadOwn(lend) || r.err != nil {
		t.Fatalf("after the recall: %v", r.err)
	}
}

// TestOwnRead_BacksOffAfterUnusedLends: requests that never borrow (the
// sink loop's) make the reader lend less and less often, instead of
// parking and being woken for every response.
func TestOwnRead_BacksOffAfterUnusedLends(t *testing.T) {
	_, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{})
	waitLent(t, c)
	const n = 200
	for i := range n {
		r := newResult()
		if err := c.Do(metadataReq("t"), false, r.done); err != nil {
			t.Fatal(err)
		}
		if _, err := r.wait(t, "a response"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	lends, waste := wire.Lends(c)
	t.Logf("%d plain requests: %d lends, backoff exponent %d", n, lends, waste)
	// 2ⁿ skips after n unused lends, capped at 64: about 8 lends in 200.
	if lends > 20 || waste == 0 {
		t.Fatalf("%d plain requests: %d lends (backoff exponent %d), want at most 20", n, lends, waste)
	}
	// A lend that is used ends the backoff. While backing off the reader
	// lends only after skipping responses: plain requests provide them.
	deadline := time.Now().Add(waitTimeout)
	for {
		if time.Now().After(deadline) {
			t.Fatal("the backoff never ended after a used lend")
		}
		r := newResult()
		lend, err := c.DoOwnRead(metadataReq("t"), time.Hour, r.done)
		if err != nil {
			t.Fatal(err)
		}
		if lend == 0 {
			if _, err := r.wait(t, "a response"); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !c.ReadOwn(lend) || r.err != nil {
			t.Fatalf("borrowing after the backoff: %v", r.err)
		}
		time.Sleep(30 * time.Millisecond) // the lend ends unused after a tick, having had a grant
		if _, waste := wire.Lends(c); waste == 0 {
			break
		}
	}
}

// TestOwnRead_BrokerGoneWhileLentIsNotWritten: while the read is lent
// nobody reads the socket, so a broker that closed it is found out by the
// next request before it is written: that request fails as not written
// (ErrConnClosed, done not called), not as maybe delivered.
func TestOwnRead_BrokerGoneWhileLentIsNotWritten(t *testing.T) {
	wire.SetLendTick(t, time.Hour) // the lend lasts until a request ends it
	cl, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{})
	lend, r := doLent(t, c)
	if !c.ReadOwn(lend) || r.err != nil {
		t.Fatalf("first request: %v", r.err)
	}
	waitLent(t, c)
	cl.Close()
	time.Sleep(20 * time.Millisecond) // the FIN arrives
	if !wire.Lent(c) {
		t.Fatal("the lend ended before the test's request")
	}
	for _, own := range []bool{true, false} {
		r := newResult()
		var err error
		if own {
			_, err = c.DoOwnRead(metadataReq("t"), time.Hour, r.done)
		} else {
			err = c.Do(metadataReq("t"), false, r.done)
		}
		if !errors.Is(err, wire.ErrConnClosed) {
			t.Fatalf("own=%v: request to a closed socket: err %v, want ErrConnClosed (not written)", own, err)
		}
		if n := r.calls.Load(); n != 0 {
			t.Fatalf("own=%v: done ran %d times for a request never written", own, n)
		}
	}
	requireClosed(t, c.Done(), "Done")
}
