//go:build !amd64

package clock

// hasTSC is false off amd64: every reading is Mono's.
const hasTSC = false

func rdtsc() uint64 { return 0 }
