// Package clock gives the send path cheap time readings: a monotonic
// reading for deadlines and a wall-clock reading for record timestamps,
// from one clock read instead of time.Now's two — and, on amd64 with an
// invariant TSC, usually from the TSC alone (tsc.go), which costs a
// third of Go's monotonic clock read on the VMs measured (issue 15).
//
// Goroutines and ownership: Clock is safe for concurrent use. Its wall
// base is an atomic pointer to an immutable value, replaced about once a
// second; its TSC base (tsc.go) is a seqlock of atomics, rewritten by
// whichever caller finds it expired (about once a millisecond while
// readings are frequent).
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
	tsc  tscBase
}

// rebaseEvery bounds how stale the wall/monotonic offset can get.
const rebaseEvery = int64(time.Second)

// Now returns monotonic nanoseconds (as Mono) and unix nanoseconds. The
// monotonic reading never runs ahead of Mono and never goes back for a
// caller; from the TSC it may lag Mono by a few microseconds at most.
func (c *Clock) Now() (mono, wall int64) {
	if hasTSC {
		if m, ok := c.tsc.now(); ok {
			if b := c.base.Load(); b != nil && m-b.mono < rebaseEvery {
				return m, b.wall + (m - b.mono)
			}
		}
		mono = c.tsc.read()
	} else {
		mono = Mono()
	}
	b := c.base.Load()
	if b == nil || mono-b.mono >= rebaseEvery {
		t := time.Now()
		nb := &base{mono: int64(t.Sub(start)), wall: t.UnixNano()}
		c.base.Store(nb)
		return nb.mono, nb.wall
	}
	return mono, b.wall + (mono - b.mono)
}
