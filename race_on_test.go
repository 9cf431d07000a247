//go:build race

package kpush_test

// raceEnabled: the race detector slows the engine about tenfold, so the
// reliability scenarios send fewer records under it (see relTarget).
const raceEnabled = true
