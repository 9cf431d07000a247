//go:build !race

package kotel

// raceEnabled: the race detector allocates on its own.
const raceEnabled = false
