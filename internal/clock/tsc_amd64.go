package clock

// rdtsc reads the time-stamp counter (tsc_amd64.s).
func rdtsc() uint64

// cpuid runs CPUID for leaf (tsc_amd64.s).
func cpuid(leaf uint32) (eax, ebx, ecx, edx uint32)

// hasTSC: the TSC is invariant (CPUID 0x80000007, EDX bit 8), so it ticks
// at one rate in every power state and is what Linux itself reads.
var hasTSC = invariantTSC()

func invariantTSC() bool {
	if maxExt, _, _, _ := cpuid(0x80000000); maxExt < 0x80000007 {
		return false
	}
	_, _, _, edx := cpuid(0x80000007)
	return edx&(1<<8) != 0
}
