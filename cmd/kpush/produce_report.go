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
	ackedBytes atomic.Int64 // input bytes of the acknowledged records
	batchBytes int

	mu       sync.Mutex
	failed   int64
	groups   map[string]*reasonGroup
	order    []*reasonGroup // in order of first failure
	skipped  []string       // first maxListed skipped lines, "where: why"
	skippedN int64
	fatal    error // once set, every later record fails with it

	notWritten, unknown outFile // --failed-out, --unknown-out
	outErr              error
	line                []byte // encoding buffer
}

// outFile is a file of failed records, created with its first record (so
// no empty file is left behind).
type outFile struct {
	name string
	f    *os.File
	w    *bufio.Writer
	n    int64
}

// write appends one line, creating the file first if need be.
func (o *outFile) write(line []byte) error {
	if o.f == nil {
		f, err := os.Create(o.name)
		if err != nil {
			return err
		}
		o.f, o.w = f, bufio.NewWriter(f)
	}
	o.n++
	_, err := o.w.Write(line)
	return err
}

func (o *outFile) close() error {
	if o.f == nil {
		return nil
	}
	err := o.w.Flush()
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	o.f = nil
	return err
}

// newTally creates the tally and the --failed-out file, which must not be
// one of the inputs.
func newTally(cfg *produceConfig, stderr io.Writer) (*tally, error) {
	t := &tally{batchBytes: cfg.props.batchBytes, groups: map[string]*reasonGroup{}}
	t.notWritten.name, t.unknown.name = cfg.failedOut, cfg.unknownOut
	for _, o := range []struct{ flag, name string }{{"--failed-out", cfg.failedOut}, {"--unknown-out", cfg.unknownOut}} {
		if o.name == "" {
			continue
		}
		st, err := os.Stat(o.name)
		if err != nil {
			continue
		}
		for _, in := range cfg.files {
			if ist, err := os.Stat(in); err == nil && os.SameFile(st, ist) {
				err := &usageError{cmd: "produce", msg: fmt.Sprintf("%s %s is also an input; write failures to another file", o.flag, o.name)}
				fmt.Fprintln(stderr, err)
				return nil, err
			}
		}
		// An earlier run's failures (say, before a --resume) must be
		// neither overwritten nor mixed with this run's.
		if st.Size() > 0 {
			err := &usageError{cmd: "produce", msg: fmt.Sprintf("%s %s already holds records (from an earlier run?); replay or move it first, or name another file", o.flag, o.name)}
			fmt.Fprintln(stderr, err)
			return nil, err
		}
		if err := os.Remove(o.name); err != nil { // empty: created only if a record fails
			return nil, fmt.Errorf("%s: %w", o.flag, err)
		}
	}
	return t, nil
}

// ack counts an acknowledged record.
func (t *tally) ack(it *item) {
	t.sent.Add(1)
	t.ackedBytes.Add(it.end - it.offset)
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
	var tl *kpush.RecordTooLargeError
	if errors.As(err, &tl) {
		switch tl.Option {
		case "WithMaxBatchBytes":
			cause = fmt.Sprintf("record too large: %d bytes encoded, -X batch.size=%d fits at most %d", tl.Size, batchBytes, tl.Limit)
		default:
			cause = fmt.Sprintf("record too large: %d bytes encoded, more than the %d-byte buffer", tl.Size, tl.Limit)
		}
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
	out := &t.notWritten
	if errors.Is(err, kpush.ErrOutcomeUnknown) {
		out = &t.unknown
	}
	if out.name != "" && it.tooLong == 0 && t.outErr == nil {
		t.line = appendJSONLine(t.line[:0], &it.rec, it.explicit, it.where(), reason)
		if err := out.write(t.line); err != nil {
			t.outErr = fmt.Errorf("%s: %w", out.name, err)
		}
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
	for _, o := range []*outFile{&t.notWritten, &t.unknown} {
		if err := o.close(); err != nil && t.outErr == nil {
			t.outErr = fmt.Errorf("%s: %w", o.name, err)
		}
	}
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
	if t.notWritten.n > 0 {
		fmt.Fprintf(w, "%d records definitely not written are in %s: safe to replay (kpush produce --format json ... %s)\n",
			t.notWritten.n, t.notWritten.name, t.notWritten.name)
	}
	if t.unknown.n > 0 {
		fmt.Fprintf(w, "%d records with an unknown outcome are in %s: they may have been written, so replaying them may duplicate them; check the topic first\n",
			t.unknown.n, t.unknown.name)
	}
}

func more(total int64, listed int) string {
	if n := total - int64(listed); n > 0 {
		return fmt.Sprintf(" and %d more", n)
	}
	return ""
}
