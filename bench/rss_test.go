package main

import "testing"

// TestVMHWM_CountsThisProcess checks that the peak RSS comes from this
// process's own memory: touching 64 MiB more raises it by about that much.
func TestVMHWM_CountsThisProcess(t *testing.T) {
	before, ok := vmHWM()
	if !ok {
		t.Skip("no /proc/self/status VmHWM on this system")
	}
	b := make([]byte, 64<<20)
	for i := range b {
		if i%4096 == 0 {
			b[i] = 1
		}
	}
	after, _ := vmHWM()
	if after < before+60 {
		t.Fatalf("VmHWM %.1f MiB after touching 64 MiB, %.1f before", after, before)
	}
	if _, rss := rusage(); rss < after {
		t.Fatalf("rusage peak %.1f MiB, VmHWM %.1f", rss, after)
	}
	_ = b[len(b)-1]
}
