// Package clock gives the send path cheap time readings: a monotonic
// reading for deadlines and a wall-clock reading for record timestamps,
// from one clock read instead of time.Now's two.
//
// Goroutines and ownership: Clock is safe for concurrent use; its base is
// an atomic pointer to an immutable value, replaced about once a second.
package clock

import (
	"sync/atomic"
	"time"
)

// start anchors Mono; it carries Go's monotonic reading.
var start = time.Now()

// Mono returns monotonic nanoseconds since process start: immune to
// wall-clock steps, so deadlines computed from it never jump.
func Mono() int64 { return int64(time.Since(start)) }

type base struct {
	mono int64 // Mono() at wall
	wall int64 // unix nanoseconds
}

// Clock derives wall time from the monotonic clock and re-reads the wall
// clock at most once a second, so a wall-clock step shows up within a
// second. The zero value is ready to use.
type Clock struct {
	base atomic.Pointer[base]
}

// rebaseEvery bounds how stale the wall/monotonic offset can get.
const rebaseEvery = int64(time.Second)

// Now returns monotonic nanoseconds (as Mono) and unix nanoseconds.
func (c *Clock) Now() (mono, wall int64) {
	mono = Mono()
	b := c.base.Load()
	if b == nil || mono-b.mono >= rebaseEvery {
		t := time.Now()
		nb := &base{mono: int64(time.Since(start)), wall: t.UnixNano()}
		c.base.Store(nb)
		return nb.mono, nb.wall
	}
	return mono, b.wall + (mono - b.mono)
}
