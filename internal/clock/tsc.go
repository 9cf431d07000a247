package clock

// The TSC fast path (amd64 with an invariant TSC; hasTSC false elsewhere).
//
// A reading is base.mono + (TSC - base.tsc) × mul, taken only within
// limit ticks (~1 ms) of the base; past that, the caller that notices
// takes the seqlock, reads Mono and the TSC and rewrites the base (read).
// The rules that keep readings honest:
//   - the base pairs a Mono reading with a TSC read after it, and mul
//     (measured from two such pairs at least calibrateMin apart) is
//     lowered by 1/1024, so an extrapolation runs slow (by ~1 µs per ms)
//     and is never ahead of Mono;
//   - a new base is never below the old one extrapolated to its TSC, so
//     readings are a nondecreasing function of the TSC: never back for a
//     caller, across rebases too;
//   - once calibrated, every reading comes from a base (a caller that
//     finds the lock taken waits for it); before, every reading is Mono's,
//     read with the lock held, so the first base is not below any of them;
//   - a pair whose Mono read took longer than the pair bound (the
//     goroutine was preempted in between) does not rebase or calibrate.
// Until the first calibration (calibrateMin after the first reading),
// every reading is Mono's.

import (
	"math/bits"
	"runtime"
	"sync/atomic"
	"time"
)

const (
	extrapolateMax = int64(time.Millisecond)       // how long a base is extrapolated
	calibrateMin   = int64(100 * time.Millisecond) // the shortest calibration interval
	recalibrate    = int64(10 * time.Second)       // the anchor moves after this long
	maxPairNs      = 2000                          // a Mono read slower than this is not paired
	// firstPairTicks bounds the pairs before the rate is known: 2 µs at
	// 5 GHz, 10 µs at 1 GHz.
	firstPairTicks = 10_000
)

// tscBase is a Clock's TSC state: a seqlock (seq odd while a writer
// rewrites the fields) over atomics, so readers take no lock and never
// allocate.
type tscBase struct {
	seq   atomic.Uint64
	mono  atomic.Int64  // the base reading, at tsc
	tsc   atomic.Uint64 // the TSC of the base
	mul   atomic.Uint64 // ns per tick, 32.32 fixed point, lowered by 1/1024; 0: not calibrated
	limit atomic.Uint64 // ticks a base is extrapolated over; 0: no fast path
	// The calibration anchor and the pair bound (written with seq odd).
	anchorMono atomic.Int64
	anchorTSC  atomic.Uint64
	pairTicks  atomic.Uint64 // maxPairNs in ticks; 0: not calibrated
}

// now extrapolates the base; ok is false when it cannot (no calibration,
// the base is expired or being rewritten, the TSC went back).
func (b *tscBase) now() (mono int64, ok bool) {
	s := b.seq.Load()
	if s&1 != 0 {
		return 0, false
	}
	t := rdtsc()
	m0, t0, mul, lim := b.mono.Load(), b.tsc.Load(), b.mul.Load(), b.limit.Load()
	if b.seq.Load() != s {
		return 0, false
	}
	d := t - t0 // wraps to huge if the TSC read is before the base's
	if d >= lim {
		return 0, false
	}
	return m0 + int64(d*mul>>32), true // d < limit (~1 ms of ticks): no overflow
}

// extrapolate is m0 + d × mul for any d (128-bit product).
func extrapolate(m0 int64, d, mul uint64) int64 {
	hi, lo := bits.Mul64(d, mul)
	return m0 + int64(hi<<32|lo>>32)
}

// read is the slow path: it takes the lock (waiting while another caller
// holds it), reads Mono between two TSC reads and, when the pair is clean,
// rebases (and calibrates) from it. It returns a reading from the new base,
// the old one extrapolated (a pair not clean), or Mono (not calibrated).
func (b *tscBase) read() int64 {
	var s uint64
	for spins := 0; ; spins++ {
		if m, ok := b.now(); ok {
			return m // another caller rebased meanwhile
		}
		if s = b.seq.Load(); s&1 == 0 && b.seq.CompareAndSwap(s, s+1) {
			break
		}
		if spins >= 16 {
			runtime.Gosched() // the holder may be descheduled
		}
	}
	defer b.seq.Store(s + 2)
	t0 := rdtsc()
	raw := Mono()
	t1 := rdtsc()
	mul := b.mul.Load()
	if mul != 0 {
		// The old base extrapolated to t1: the floor of the new one.
		if old := extrapolate(b.mono.Load(), t1-b.tsc.Load(), mul); old > raw {
			raw = old
		}
		if t1-t0 > b.pairTicks.Load() {
			return extrapolate(b.mono.Load(), t1-b.tsc.Load(), mul) // not a pair to rebase on
		}
	} else if t1-t0 > firstPairTicks {
		return raw
	}
	am, at := b.anchorMono.Load(), b.anchorTSC.Load()
	if at == 0 || t1 <= at {
		b.anchorMono.Store(raw)
		b.anchorTSC.Store(t1)
	} else if dm := raw - am; dm >= calibrateMin && (mul == 0 || dm >= recalibrate) {
		hi, lo := bits.Mul64(uint64(dm), 1<<32)
		if dt := t1 - at; hi < dt {
			m, _ := bits.Div64(hi, lo, dt)
			if m -= m >> 10; m > 0 {
				mul = m
				b.mul.Store(m)
				b.limit.Store(uint64(extrapolateMax) << 32 / m)
				b.pairTicks.Store(maxPairNs << 32 / m)
			}
		}
		if dm >= recalibrate {
			b.anchorMono.Store(raw)
			b.anchorTSC.Store(t1)
		}
	}
	b.mono.Store(raw)
	b.tsc.Store(t1)
	return raw
}
