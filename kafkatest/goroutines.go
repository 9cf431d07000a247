package kafkatest

import (
	"bytes"
	"fmt"
	"runtime"
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

// GoroutineFilter selects running goroutines by the packages their stacks
// run in, to check that a component left nothing behind after Close. It is
// a small cousin of go.uber.org/goleak: a goroutine matches when one of its
// frames, or the function that created it, belongs to one of Packages (or a
// package below one of them) and not to one of Except (or below). The
// goroutine calling Find or Wait never matches.
//
// Packages are import paths, e.g. "github.com/kpush/kpush"; a test package
// is the import path with "_test" appended.
type GoroutineFilter struct {
	Packages []string
	Except   []string
}

// Find returns the stacks of the matching goroutines, one string each, as
// runtime.Stack prints them.
func (f GoroutineFilter) Find() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	blocks := strings.Split(string(buf), "\n\n")
	var found []string
	for _, g := range blocks[1:] { // blocks[0] is the caller
		if f.matches(g) {
			found = append(found, g)
		}
	}
	return found
}

// Wait waits until no goroutine matches, or timeout passes; then it returns
// a *LeakError listing the stacks of the goroutines still running.
//
// Nothing signals a goroutine's exit, so Wait rechecks on a timer whose
// interval doubles from 1ms to 50ms; the deadline is a channel too, so the
// wait is bounded.
func (f GoroutineFilter) Wait(timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	interval := time.Millisecond
	tick := time.NewTimer(0)
	defer tick.Stop()
	for {
		select {
		case <-deadline.C:
			if left := f.Find(); len(left) > 0 {
				return &LeakError{Packages: f.Packages, Timeout: timeout, Stacks: left}
			}
			return nil
		case <-tick.C:
			if len(f.Find()) == 0 {
				return nil
			}
			interval = min(2*interval, 50*time.Millisecond)
			tick.Reset(interval)
		}
	}
}

// LeakError is returned by GoroutineFilter.Wait: goroutines of Packages
// were still running when Timeout passed.
type LeakError struct {
	Packages []string
	Timeout  time.Duration
	Stacks   []string // as runtime.Stack prints them
}

// Error lists the surviving goroutines.
func (e *LeakError) Error() string {
	return fmt.Sprintf("kafkatest: %d goroutines of %s still running after %v:\n\n%s",
		len(e.Stacks), strings.Join(e.Packages, ", "), e.Timeout, strings.Join(e.Stacks, "\n\n"))
}

func (f GoroutineFilter) matches(stack string) bool {
	for line := range strings.SplitSeq(stack, "\n") {
		if line == "" || line[0] == '\t' || strings.HasPrefix(line, "goroutine ") {
			continue // file:line, or the header
		}
		pkg := funcPackage(strings.TrimPrefix(line, "created by "))
		if within(pkg, f.Packages) && !within(pkg, f.Except) {
			return true
		}
	}
	return false
}

// funcPackage returns the import path of the function a stack line names:
// "example.com/a/b.(*T).M(0x1)" → "example.com/a/b". A last path element
// with a dot in it (gopkg.in/yaml.v3) is cut at the dot; no package a kpush
// test filters on has one.
func funcPackage(line string) string {
	slash := strings.LastIndexByte(line, '/')
	dot := strings.IndexByte(line[slash+1:], '.')
	if dot < 0 {
		return line
	}
	return line[:slash+1+dot]
}

func within(pkg string, roots []string) bool {
	for _, r := range roots {
		if pkg == r || strings.HasPrefix(pkg, r+"/") {
			return true
		}
	}
	return false
}
