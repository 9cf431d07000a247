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
	return serve(t, func(c net.Conn) { io.Copy(c, c) })
}

func frame(body string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	return append(b, body...)
}

// TestProxy_TapCutsFrames: frames split across writes, and several in one
// write, reach the tap whole, in order, once per direction.
func TestProxy_TapCutsFrames(t *testing.T) {
	p := newProxy(t, rawEcho(t))
	frames := make(chan Frame, 16)
	p.SetTap(func(f Frame) { frames <- f })
	c := dial(t, p)
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
