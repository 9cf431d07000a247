package clock

// The TSC fast path (amd64 with an invariant TSC; hasTSC false elsewhere).
//
// A reading is base.mono + (TSC - base.tsc) × mul, taken only within
// limit ticks (~1 ms) of the base; past that, the caller that notices
// reads Mono and the TSC and rewrites the base (read). Three rules keep
// it honest:
//   - the base pairs a Mono reading with a TSC read *after* it, so the
//     base is never ahead of the true time at its TSC;
//   - mul, measured from two such pairs at least calibrateMin apart, is
//     lowered by 1/1024, so an extrapolation runs slow (by ~1 µs per ms)
//     and never passes the Mono of a later read: readings never go back,
//     whether a caller mixes fast and slow ones or crosses a rebase;
//   - a pair whose Mono read took longer than maxPairTicks (the goroutine
//     was preempted in between) neither calibrates nor rebases.
// Until the first calibration (calibrateMin after the first reading),
// every reading is Mono's.

import (
	"math/bits"
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
	mono  atomic.Int64  // Mono at tsc
	tsc   atomic.Uint64 // the TSC just after mono was read
	mul   atomic.Uint64 // ns per tick, 32.32 fixed point, lowered by 1/1024; 0: not calibrated
	limit atomic.Uint64 // ticks a base is extrapolated over; 0: no fast path
	// The calibration anchor (written under seq only).
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

// read returns Mono and, when the pair is clean and nobody else is
// writing, rebases (and calibrates) from it.
func (b *tscBase) read() int64 {
	t0 := rdtsc()
	mono := Mono()
	t1 := rdtsc()
	s := b.seq.Load()
	if s&1 != 0 || !b.seq.CompareAndSwap(s, s+1) {
		return mono
	}
	defer b.seq.Store(s + 2)
	pt := b.pairTicks.Load()
	if pt == 0 {
		pt = firstPairTicks
	}
	if t1-t0 > pt {
		return mono // preempted between the reads: not a pair to trust
	}
	am, at := b.anchorMono.Load(), b.anchorTSC.Load()
	if at == 0 || t1 <= at {
		b.anchorMono.Store(mono)
		b.anchorTSC.Store(t1)
		return mono
	}
	if dm := mono - am; dm >= calibrateMin {
		hi, lo := bits.Mul64(uint64(dm), 1<<32)
		if dt := t1 - at; hi < dt {
			mul, _ := bits.Div64(hi, lo, dt)
			mul -= mul >> 10
			if mul > 0 {
				b.mul.Store(mul)
				b.limit.Store(uint64(extrapolateMax) << 32 / mul)
				b.pairTicks.Store(maxPairNs << 32 / mul)
			}
		}
		if dm >= recalibrate {
			b.anchorMono.Store(mono)
			b.anchorTSC.Store(t1)
		}
	}
	b.mono.Store(mono)
	b.tsc.Store(t1)
	return mono
}
