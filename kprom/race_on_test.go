//go:build race

package kprom_test

// raceEnabled: the race detector allocates on its own.
const raceEnabled = true
