package kafkatest

import (
	"bytes"
	"fmt"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// labelKey is the pprof label every goroutine of a cluster carries, with the
// cluster's number as its value. kfake.Cluster.Close returns without waiting
// for its goroutines and offers nothing to wait on, so the label is how we
// find them: Go copies a goroutine's labels to each goroutine it starts.
const labelKey = "kafkatest.cluster"

// waitGoroutines waits until no goroutine labelled with cluster label is
// left, or timeout passes. It returns an error with the stacks of those still
// running at the deadline.
//
// Nothing signals the last goroutine's exit, so this rechecks on a timer
// whose interval doubles from 1ms to 50ms; the deadline is a channel too, so
// the wait is bounded.
func waitGoroutines(label string, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	interval := time.Millisecond
	tick := time.NewTimer(0)
	defer tick.Stop()
	for {
		select {
		case <-deadline.C:
			n, stacks := labelledGoroutines(label)
			if n == 0 {
				return nil
			}
			return fmt.Errorf("kafkatest: %d cluster goroutines still running %v after close:\n%s", n, timeout, stacks)
		case <-tick.C:
			if n, _ := labelledGoroutines(label); n == 0 {
				return nil
			}
			interval = min(2*interval, 50*time.Millisecond)
			tick.Reset(interval)
		}
	}
}

// labelledGoroutines returns how many goroutines carry the cluster label and
// their grouped stacks, read from the goroutine profile in its text form
// ("N @ pcs", then "# labels: {...}", then one "#\t" line per frame).
func labelledGoroutines(label string) (int, string) {
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 1); err != nil {
		return 0, ""
	}
	want := strconv.Quote(labelKey) + ":" + strconv.Quote(label)
	var (
		n      int
		stacks strings.Builder
	)
	_, body, _ := strings.Cut(buf.String(), "\n") // drop "goroutine profile: total N"
	for block := range strings.SplitSeq(body, "\n\n") {
		lines := strings.Split(block, "\n")
		if len(lines) < 2 || !strings.HasPrefix(lines[1], "# labels: ") || !strings.Contains(lines[1], want) {
			continue
		}
		count, _, ok := strings.Cut(lines[0], " @ ")
		if !ok {
			continue
		}
		c, err := strconv.Atoi(count)
		if err != nil {
			continue
		}
		n += c
		fmt.Fprintf(&stacks, "%d goroutine(s):\n", c)
		for _, l := range lines[2:] {
			stacks.WriteString(strings.TrimPrefix(l, "#"))
			stacks.WriteByte('\n')
		}
	}
	return n, stacks.String()
}
