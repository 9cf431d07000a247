package wire

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const idleWait = 5 * time.Second

func idleCluster(t *testing.T) (*kfake.Cluster, string) {
	t.Helper()
	cl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl, cl.ListenAddrs()[0]
}

func idleRecv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(idleWait):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// TestConn_ClosesWhenIdle: with IdleTimeout, a connection nothing was
// sent on for that long closes itself (ErrIdle, OnIdleClose called), and
// a later Do fails as not written (ErrConnClosed), never as maybe
// delivered, without calling done.
func TestConn_ClosesWhenIdle(t *testing.T) {
	_, addr := idleCluster(t)
	closedAddr := make(chan string, 1)
	c, err := Dial(context.Background(), addr, &Config{IdleTimeout: 20 * time.Millisecond, OnIdleClose: func(a string) { closedAddr <- a }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Request(context.Background(), kmsg.NewPtrMetadataRequest()); err != nil {
		t.Fatal(err)
	}
	if got := idleRecv(t, closedAddr, "the idle close"); got != addr {
		t.Errorf("OnIdleClose(%q), want %q", got, addr)
	}
	idleRecv(t, c.Done(), "the reader to exit")
	if err := c.Err(); !errors.Is(err, ErrIdle) {
		t.Fatalf("Err() = %v, want ErrIdle", err)
	}
	called := false
	err = c.Do(kmsg.NewPtrMetadataRequest(), false, func(kmsg.Response, error) { called = true })
	if !errors.Is(err, ErrConnClosed) || errors.Is(err, ErrMaybeDelivered) || called {
		t.Fatalf("Do after the idle close = %v (done called: %v); want ErrConnClosed, not ErrMaybeDelivered, done not called", err, called)
	}
}

// TestConn_IdleCloseWaitsForInFlight: the idle check never closes a
// connection with a request in flight, however long the broker takes;
// the idle period starts again at the response.
func TestConn_IdleCloseWaitsForInFlight(t *testing.T) {
	cl, addr := idleCluster(t)
	release := make(chan struct{})
	held := make(chan struct{}, 1)
	cl.ControlKey(int16(kmsg.ListOffsets), func(kmsg.Request) (kmsg.Response, error, bool) {
		held <- struct{}{}
		cl.SleepControl(func() { <-release })
		return nil, nil, false
	})
	checks := make(chan bool, 100)
	c, err := Dial(context.Background(), addr, &Config{IdleTimeout: 5 * time.Millisecond, testHookIdleCheck: func(closed bool) {
		select {
		case checks <- closed:
		default:
		}
	}})
	if err != nil {
		close(release)
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan error, 1)
	if err := c.Do(kmsg.NewPtrListOffsetsRequest(), false, func(_ kmsg.Response, err error) { got <- err }); err != nil {
		close(release)
		t.Fatal(err)
	}
	idleRecv(t, held, "the held request")
	for i := range 5 { // five idle periods pass with the request in flight
		if closed := idleRecv(t, checks, "an idle check"); closed {
			close(release)
			t.Fatalf("idle check %d closed the connection with a request in flight", i)
		}
	}
	close(release)
	if err := idleRecv(t, got, "the held response"); err != nil {
		t.Fatalf("held request: %v", err)
	}
	for !idleRecv(t, checks, "the idle close after the response") {
	}
	if err := c.Err(); !errors.Is(err, ErrIdle) {
		t.Fatalf("Err() = %v, want ErrIdle", err)
	}
}
