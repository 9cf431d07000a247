package kpush_test

import (
	"bytes"
	"context"
	"fmt"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"
)

// leakLabel is the pprof label of the goroutines a leak check watches. Go
// copies a goroutine's labels to every goroutine it starts, so every
// goroutine a producer created inside withLeakLabel starts (metadata,
// reaper, sinks, callbacks, connection readers) carries it, and no other
// test's goroutine does: counts cannot mask a leak.
const leakLabel = "kpush.leakcheck"

// withLeakLabel runs f with the leak-check label value name.
func withLeakLabel(name string, f func()) {
	pprof.Do(context.Background(), pprof.Labels(leakLabel, name), func(context.Context) { f() })
}

// labelledGoroutines returns how many goroutines carry the leak-check
// label value name, and their stacks.
func labelledGoroutines(name string) (int, string) {
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 1); err != nil {
		return 0, ""
	}
	want := strconv.Quote(leakLabel) + ":" + strconv.Quote(name)
	n := 0
	var stacks strings.Builder
	_, body, _ := strings.Cut(buf.String(), "\n")
	for block := range strings.SplitSeq(body, "\n\n") {
		lines := strings.Split(block, "\n")
		if len(lines) < 2 || !strings.Contains(lines[1], want) {
			continue
		}
		count, _, _ := strings.Cut(lines[0], " @ ")
		c, err := strconv.Atoi(count)
		if err != nil {
			continue
		}
		n += c
		fmt.Fprintf(&stacks, "%s\n", block)
	}
	return n, stacks.String()
}

// checkNoLabelledGoroutines fails t if goroutines labelled name are still
// running. Close promises that every kpush goroutine has exited when it
// returns; the few that are signalled but not waited for (the metadata
// loop's context watcher) get a bounded grace period, rechecked on a
// doubling timer (nothing signals a goroutine's exit).
func checkNoLabelledGoroutines(t *testing.T, name string) {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	interval := time.Millisecond
	tick := time.NewTimer(0)
	defer tick.Stop()
	for {
		select {
		case <-deadline.C:
			if n, stacks := labelledGoroutines(name); n > 0 {
				t.Fatalf("%s: %d goroutines left 5s after Close:\n%s", name, n, stacks)
			}
			return
		case <-tick.C:
			if n, _ := labelledGoroutines(name); n == 0 {
				return
			}
			interval = min(2*interval, 50*time.Millisecond)
			tick.Reset(interval)
		}
	}
}
