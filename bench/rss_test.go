package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestPeakRSS_ChildExcludesParent checks that a client's peak RSS is its
// own: a parent holding 128 MiB starts a child (as the bench starts its
// clients), and the child's peak (peakRSS) stays far below the parent's.
// getrusage's maxrss would not: exec carries the replaced memory's
// high-water mark over.
func TestPeakRSS_ChildExcludesParent(t *testing.T) {
	if os.Getenv("BENCH_RSS_CHILD") == "1" {
		fmt.Printf("rss=%.1f\n", peakRSS())
		return
	}
	if _, ok := vmHWM(); !ok {
		t.Skip("no /proc/self/status VmHWM on this system")
	}
	b := make([]byte, 128<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	parent := peakRSS()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPeakRSS_ChildExcludesParent$")
	cmd.Env = append(os.Environ(), "BENCH_RSS_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	_, after, ok := strings.Cut(string(out), "rss=")
	if !ok {
		t.Fatalf("child printed %q", out)
	}
	child, err := strconv.ParseFloat(strings.Fields(after)[0], 64)
	if err != nil {
		t.Fatal(err)
	}
	if parent < 128 || child > parent-64 {
		t.Fatalf("parent peak %.1f MiB, child's %.1f MiB: the child's must not include the parent's", parent, child)
	}
	_ = b[len(b)-1]
}
