package wire_test

// Dial failures and connections that die mid-request.

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/internal/wire"
)

func TestDial_ClosedPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	start := time.Now()
	c, err := wire.Dial(context.Background(), addr, &wire.Config{DialTimeout: waitTimeout})
	if err == nil {
		c.Close()
		t.Fatal("Dial to a closed port succeeded")
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Dial took %v to fail", elapsed)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), addr) {
		t.Errorf("Dial error %q: want ECONNREFUSED naming %s", err, addr)
	}
}

// silentListener accepts connections and reads from them without ever
// answering. Accepted connections are reported and closed at cleanup.
func silentListener(t *testing.T) (addr string, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan net.Conn, 10)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			ch <- nc
			wg.Go(func() {
				buf := make([]byte, 1024)
				for {
					if _, err := nc.Read(buf); err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, nc := range conns {
			nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), ch
}

func TestDial_SilentBrokerHitsDialTimeout(t *testing.T) {
	addr, accepted := silentListener(t)
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		c, err := wire.Dial(context.Background(), addr, &wire.Config{DialTimeout: 200 * time.Millisecond})
		if err == nil {
			c.Close()
		}
		errc <- err
	}()
	recv(t, accepted, "accept")
	err := recv(t, errc, "Dial against a silent listener")
	if err == nil {
		t.Fatal("Dial against a silent listener succeeded")
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Dial took %v, want about the 200ms DialTimeout", elapsed)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "api versions") {
		t.Errorf("Dial error %q: want a deadline error from api versions", err)
	}
}

func TestDial_ContextAlreadyCancelled(t *testing.T) {
	_, addr := newCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c, err := wire.Dial(ctx, addr, &wire.Config{})
	if err == nil {
		c.Close()
		t.Fatal("Dial with a cancelled context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Dial = %v, want context.Canceled", err)
	}
}

func TestDial_ContextDeadlineShorterThanDialTimeout(t *testing.T) {
	addr, _ := silentListener(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	c, err := wire.Dial(ctx, addr, &wire.Config{DialTimeout: waitTimeout})
	if err == nil {
		c.Close()
		t.Fatal("Dial against a silent listener succeeded")
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Dial took %v, want about the 100ms ctx deadline", elapsed)
	}
}

func TestDial_ContextCancelDuringHandshake(t *testing.T) {
	addr, accepted := silentListener(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		c, err := wire.Dial(ctx, addr, &wire.Config{DialTimeout: 3 * time.Second})
		if err == nil {
			c.Close()
		}
		errc <- err
	}()
	recv(t, accepted, "accept")
	cancel()
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Dial = %v, want context.Canceled", err)
		}
	case <-timer.C:
		err := recv(t, errc, "Dial")
		t.Fatalf("Dial ignored ctx cancel during ApiVersions; returned only at DialTimeout: %v", err)
	}
}

// blockingReq stalls in AppendTo (which Do calls while encoding) until
// proceed is closed, so a test can act while Do is mid-call.
type blockingReq struct {
	*kmsg.MetadataRequest
	encoding chan struct{}
	proceed  chan struct{}
}

func (r *blockingReq) AppendTo(b []byte) []byte {
	close(r.encoding)
	<-r.proceed
	return r.MetadataRequest.AppendTo(b)
}

// A connection that dies while Do is encoding must still honour Do's
// contract: either Do returns an error (and done never runs) or done runs
// exactly once.
func TestDo_ConnDiesWhileEncoding(t *testing.T) {
	_, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{})
	req := &blockingReq{metadataReq("t"), make(chan struct{}), make(chan struct{})}
	r := newResult()
	doErr := make(chan error, 1)
	go func() { doErr <- c.Do(req, false, r.done) }()
	recv(t, req.encoding, "Do encoding")
	closeConn(t, c) // reader drains pending and exits while Do is encoding
	close(req.proceed)
	if err := recv(t, doErr, "Do"); err != nil {
		if !errors.Is(err, wire.ErrConnClosed) {
			t.Fatalf("Do = %v, want nil or ErrConnClosed", err)
		}
		if r.calls.Load() != 0 {
			t.Fatal("Do returned an error and also ran done")
		}
		return
	}
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	select {
	case <-r.ch:
		if !errors.Is(r.err, wire.ErrMaybeDelivered) && !errors.Is(r.err, wire.ErrConnClosed) {
			t.Errorf("done error = %v", r.err)
		}
	case <-timer.C:
		t.Fatal("Do returned nil but done never ran (call lost)")
	}
}
