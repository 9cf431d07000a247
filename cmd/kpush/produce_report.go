package main

// Outcomes of "kpush produce": counts, failure reasons, --failed-out, the
// summary and the progress line.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kpush/kpush"
)

// maxListed is how many input positions a summary lists per reason.
const maxListed = 10

type reasonGroup struct {
	reason string
	count  int64
	where  []string // the first maxListed positions
}

// tally counts outcomes. Callbacks of several kpush goroutines call fail
// concurrently; mu guards every field but sent.
type tally struct {
	sent       atomic.Int64
	batchBytes int

	mu       sync.Mutex
	failed   int64
	groups   map[string]*reasonGroup
	order    []*reasonGroup // in order of first failure
	skipped  []string       // first maxListed skipped lines, "where: why"
	skippedN int64
	fatal    error // once set, every later record fails with it

	outName string
	outFile *os.File
	out     *bufio.Writer
	outN    int64
	outErr  error
	line    []byte // encoding buffer for out
}

// newTally creates the tally and the --failed-out file, which must not be
// one of the inputs.
func newTally(cfg *produceConfig, stderr io.Writer) (*tally, error) {
	t := &tally{batchBytes: cfg.props.batchBytes, groups: map[string]*reasonGroup{}}
	if cfg.failedOut == "" {
		return t, nil
	}
	if st, err := os.Stat(cfg.failedOut); err == nil {
		for _, in := range cfg.files {
			if ist, err := os.Stat(in); err == nil && os.SameFile(st, ist) {
				fmt.Fprintf(stderr, "kpush produce: --failed-out %s is also an input; write failures to another file\n", cfg.failedOut)
				return nil, errUsage
			}
		}
	}
	f, err := os.Create(cfg.failedOut)
	if err != nil {
		return nil, fmt.Errorf("--failed-out: %w", err)
	}
	t.outName, t.outFile, t.out = cfg.failedOut, f, bufio.NewWriter(f)
	return t, nil
}

// reasonText is the summary's grouping key: the outcome category, then
// the cause.
func reasonText(err error, batchBytes int) string {
	var pe *kpush.ProduceError
	if !errors.As(err, &pe) {
		return err.Error()
	}
	what := "not written"
	if pe.Unknown {
		what = "outcome unknown"
	}
	cause := strings.TrimPrefix(pe.Err.Error(), "kpush: ")
	if errors.Is(err, kpush.ErrRecordTooLarge) {
		cause += fmt.Sprintf(" (batch.size=%d)", batchBytes)
	}
	return what + ": " + cause
}

// fail counts a failed record and writes it to --failed-out.
func (t *tally) fail(it *item, err error) {
	reason := reasonText(err, t.batchBytes)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failed++
	g := t.groups[reason]
	if g == nil {
		g = &reasonGroup{reason: reason}
		t.groups[reason] = g
		t.order = append(t.order, g)
	}
	g.count++
	if len(g.where) < maxListed {
		g.where = append(g.where, it.where())
	}
	if t.out != nil && it.tooLong == 0 && t.outErr == nil {
		t.line = appendJSONLine(t.line[:0], &it.rec, it.explicit, it.where(), reason)
		_, t.outErr = t.out.Write(t.line)
		t.outN++
	}
}

// skip counts a malformed line skipped by --skip-bad.
func (t *tally) skip(it *item) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.skippedN++
	if len(t.skipped) < maxListed {
		t.skipped = append(t.skipped, it.where()+": "+it.bad.Error())
	}
}

func (t *tally) setFatal(err error) {
	t.mu.Lock()
	if t.fatal == nil {
		t.fatal = err
	}
	t.mu.Unlock()
}

func (t *tally) fatalErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.fatal
}

func (t *tally) counts() (sent, failed, skipped int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sent.Load(), t.failed, t.skippedN
}

// closeFailedOut flushes and closes the --failed-out file; call it once
// every record has its outcome.
func (t *tally) closeFailedOut() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.outFile == nil {
		return nil
	}
	if err := t.out.Flush(); t.outErr == nil {
		t.outErr = err
	}
	if err := t.outFile.Close(); t.outErr == nil {
		t.outErr = err
	}
	t.out = nil
	return t.outErr
}

// writeSummary prints the delivery summary.
func (t *tally) writeSummary(w io.Writer, elapsed time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sent := t.sent.Load()
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(sent) / s
	}
	fmt.Fprintf(w, "kpush produce: %d sent, %d failed, %d skipped in %v (%.0f records/s)\n",
		sent, t.failed, t.skippedN, elapsed.Round(time.Millisecond), rate)
	if t.failed > 0 {
		fmt.Fprintln(w, "failed, by reason:")
		for _, g := range t.order {
			fmt.Fprintf(w, "  %8d  %s\n", g.count, g.reason)
			fmt.Fprintf(w, "            at %s%s\n", strings.Join(g.where, ", "), more(g.count, len(g.where)))
		}
	}
	if t.skippedN > 0 {
		fmt.Fprintf(w, "skipped malformed lines (--skip-bad):\n")
		for _, s := range t.skipped {
			fmt.Fprintf(w, "  %s\n", s)
		}
		if n := t.skippedN - int64(len(t.skipped)); n > 0 {
			fmt.Fprintf(w, "  and %d more\n", n)
		}
	}
	if t.outName != "" && t.outN > 0 {
		fmt.Fprintf(w, "%d failed records written to %s (replay: kpush produce --format json ... %s)\n", t.outN, t.outName, t.outName)
	}
}

func more(total int64, listed int) string {
	if n := total - int64(listed); n > 0 {
		return fmt.Sprintf(" and %d more", n)
	}
	return ""
}

// startProgress shows a progress line on stderr when it is a terminal and
// every input is a file of known size; it returns the function that stops
// it and clears the line.
func startProgress(stderr io.Writer, ins []input, read *atomic.Int64, t *tally) (stop func()) {
	f, ok := stderr.(*os.File)
	if !ok {
		return func() {}
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return func() {}
	}
	var total int64
	for _, in := range ins {
		if in.size < 0 {
			return func() {}
		}
		total += in.size
	}
	if total == 0 {
		return func() {}
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				fmt.Fprintf(f, "\r%70s\r", "")
				return
			case <-tick.C:
				frac := min(1, float64(read.Load())/float64(total))
				bar := strings.Repeat("#", int(frac*30)) + strings.Repeat(".", 30-int(frac*30))
				sent, failed, _ := t.counts()
				fmt.Fprintf(f, "\r[%s] %3.0f%%  %d sent  %d failed", bar, frac*100, sent, failed)
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}
