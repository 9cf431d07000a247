package kpush

// SetFlushSealedHook makes f run inside every Flush of p once the set of
// records it waits for is fixed (tests only; call before any Flush).
func SetFlushSealedHook(p *Producer, f func()) { p.testHookFlushSealed = f }
