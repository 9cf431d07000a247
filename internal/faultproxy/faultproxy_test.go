package faultproxy

import (
	"bufio"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// serve starts a server on 127.0.0.1 that runs handle on each accepted
// connection (and closes it after), and returns its address; the test's
// cleanup stops it.
func serve(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// echo starts a line echo server and returns its address.
func echo(t *testing.T) string {
	return serve(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := c.Write([]byte(line)); err != nil {
				return
			}
		}
	})
}

// newProxy starts a proxy in front of target; the test's cleanup closes it.
func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// dial opens a connection through p; the test's cleanup closes it.
func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func roundTrip(c net.Conn, r *bufio.Reader, msg string, wait time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	return r.ReadString('\n')
}

func TestProxy_Modes(t *testing.T) {
	p := newProxy(t, echo(t))
	c := dial(t, p)
	r := bufio.NewReader(c)
	if got, err := roundTrip(c, r, "a", 5*time.Second); err != nil || got != "a\n" {
		t.Fatalf("pass: %q %v", got, err)
	}

	p.SetDelay(150 * time.Millisecond)
	if err := p.Set(Delay); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if got, err := roundTrip(c, r, "b", 5*time.Second); err != nil || got != "b\n" {
		t.Fatalf("delay: %q %v", got, err)
	}
	if el := time.Since(start); el < 300*time.Millisecond { // both directions delayed
		t.Errorf("delay: round trip took %v, want at least 300ms", el)
	}

	if err := p.Set(BlackHole); err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(c, r, "c", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("black hole: got %q %v, want a read timeout", got, err)
	}
	if p.Swallowed() == 0 {
		t.Errorf("black hole swallowed nothing")
	}
	if err := p.Set(Pass); err != nil { // closes the connection that lost bytes
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatalf("connection that lost bytes to the black hole is still open")
	}

	c2 := dial(t, p)
	r2 := bufio.NewReader(c2)
	if got, err := roundTrip(c2, r2, "d", 5*time.Second); err != nil || got != "d\n" {
		t.Fatalf("pass after black hole: %q %v", got, err)
	}
	if err := p.Set(Cut); err != nil {
		t.Fatal(err)
	}
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := r2.ReadString('\n'); err == nil {
		t.Fatalf("cut: connection still open")
	}
	c3, err := net.Dial("tcp", p.Addr())
	if err == nil {
		defer c3.Close()
		if got, err := roundTrip(c3, bufio.NewReader(c3), "e", 5*time.Second); err == nil {
			t.Fatalf("cut: new connection got %q", got)
		}
	}
	if err := p.Set(Mode(9)); !errors.Is(err, ErrBadMode) {
		t.Errorf("Set(9) = %v, want ErrBadMode", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Set(Pass); !errors.Is(err, ErrClosed) {
		t.Errorf("Set after Close = %v, want ErrClosed", err)
	}
}
