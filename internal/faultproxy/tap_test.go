package faultproxy

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// rawEcho starts a server that echoes bytes unchanged.
func rawEcho(t *testing.T) string {
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
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func frame(body string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	return append(b, body...)
}

// TestProxy_TapCutsFrames: frames split across writes, and several in one
// write, reach the tap whole, in order, once per direction.
func TestProxy_TapCutsFrames(t *testing.T) {
	p, err := New(rawEcho(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	frames := make(chan Frame, 16)
	p.SetTap(func(f Frame) { frames <- f })
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stream := append(append(frame("first"), frame("")...), frame("third one")...)
	for _, part := range [][]byte{stream[:2], stream[2:7], stream[7:]} {
		if _, err := c.Write(part); err != nil {
			t.Fatal(err)
		}
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, len(stream))); err != nil {
		t.Fatal(err)
	}
	want := []string{"first", "", "third one"}
	got := map[Direction][]string{}
	deadline := time.After(5 * time.Second)
	for len(got[ToTarget])+len(got[ToClient]) < 2*len(want) {
		select {
		case f := <-frames:
			if f.Conn != 1 || f.At.IsZero() {
				t.Errorf("frame %+v: want conn 1 and a time", f)
			}
			got[f.Dir] = append(got[f.Dir], string(f.Data))
		case <-deadline:
			t.Fatalf("tap saw %v, want %q each way", got, want)
		}
	}
	for _, d := range []Direction{ToTarget, ToClient} {
		for i := range want {
			if got[d][i] != want[i] {
				t.Errorf("%v frame %d = %q, want %q", d, i, got[d][i], want[i])
			}
		}
	}
	p.SetTap(nil)
}
