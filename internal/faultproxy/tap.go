package faultproxy

import (
	"encoding/binary"
	"time"
)

// Direction says which way a frame went through the proxy.
type Direction int8

const (
	// ToTarget is client→target (a Kafka request).
	ToTarget Direction = iota
	// ToClient is target→client (a Kafka response).
	ToClient
)

// String names the direction.
func (d Direction) String() string {
	if d == ToTarget {
		return "to target"
	}
	return "to client"
}

// Frame is one Kafka size-delimited frame the proxy forwarded.
type Frame struct {
	// Conn identifies the proxied connection (1, 2, ... in accept order).
	Conn uint64
	// Dir is the way the frame went.
	Dir Direction
	// At is when the proxy had read the frame's last byte, before
	// forwarding it: a request's At is after the client wrote it, a
	// response's At is before the client can have read it.
	At time.Time
	// Data is the frame without its 4-byte size: a request or response
	// header and body. The tap owns it.
	Data []byte
}

// A Tap receives every frame of the connections accepted after SetTap
// installed it, in order per connection and direction. It is called from
// the proxy's copy goroutines and must be safe for concurrent use; a slow
// tap delays the traffic.
type Tap func(Frame)

// SetTap installs tap for connections the proxy accepts from now on (nil
// removes it for new connections). Frames are cut by the Kafka size
// prefix, so the tap sees whole requests and responses; bytes swallowed
// by BlackHole or dropped by Cut are not framed, and the connections they
// broke are closed anyway.
func (p *Proxy) SetTap(tap Tap) {
	if tap == nil {
		p.tap.Store(nil)
		return
	}
	p.tap.Store(&tap)
}

// framer cuts one direction of a connection into frames. Owned by the
// pump goroutine of that direction.
type framer struct {
	tap  Tap
	conn uint64
	dir  Direction
	buf  []byte
}

// maxFrame bounds a frame the framer buffers; past it the stream is not
// Kafka (or out of sync) and the framer stops.
const maxFrame = 256 << 20

func (f *framer) feed(b []byte, at time.Time) {
	if f.tap == nil {
		return
	}
	f.buf = append(f.buf, b...)
	for len(f.buf) >= 4 {
		size := binary.BigEndian.Uint32(f.buf)
		if size > maxFrame {
			f.tap, f.buf = nil, nil
			return
		}
		if len(f.buf) < 4+int(size) {
			return
		}
		data := make([]byte, size)
		copy(data, f.buf[4:])
		f.buf = f.buf[4+size:]
		f.tap(Frame{Conn: f.conn, Dir: f.dir, At: at, Data: data})
	}
	if len(f.buf) == 0 {
		f.buf = nil // release a large request's buffer
	}
}
