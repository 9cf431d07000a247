package main

// The progress line of "kpush produce" (and the terminal test shared with
// bench). The line is redrawn with a carriage return and cleared with
// "\r\x1b[K", cut to the terminal's width so it never wraps;
// golang.org/x/term answers "is this a terminal" and "how wide".
//
// Goroutines: startProgress's goroutine draws until its stop function is
// called; it only reads atomic counters and the watch's stall state.

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
)

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// termWidth is w's width in columns (80 when unknown).
func termWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 10 {
			return cols
		}
	}
	return 80
}

// fitLine cuts s to width-1 columns (counted as bytes: the line is ASCII).
func fitLine(s string, width int) string {
	if len(s) >= width {
		return s[:width-1]
	}
	return s
}

// progressLine is the progress text for the inputs' total size (-1:
// unknown, as for stdin) after elapsed.
func progressLine(s *sender, total int64, elapsed time.Duration) string {
	sent, failed, _ := s.tally.counts()
	read, handed := s.read.Load(), s.handed.Load()
	rate := 0.0
	if sec := elapsed.Seconds(); sec > 0 {
		rate = float64(sent) / sec
	}
	var b strings.Builder
	if total > 0 {
		frac := min(1, float64(read)/float64(total))
		acked := min(1, float64(s.tally.ackedBytes.Load())/float64(total))
		done := int(acked * 20)
		inRead := max(0, int(frac*20)-done)
		fmt.Fprintf(&b, "[%s%s%s] read %.0f%% acked %.0f%% ", strings.Repeat("#", done), strings.Repeat("-", inRead),
			strings.Repeat(".", 20-done-inRead), frac*100, acked*100)
	} else {
		fmt.Fprintf(&b, "read %d (%s) ", handed, humanBytes(read))
	}
	fmt.Fprintf(&b, "%d acked %d failed %.0f/s", sent, failed, rate)
	if st := s.watch.state.Load(); st != nil {
		// The whole story is on the line above (see startProgress).
		fmt.Fprintf(&b, " STALLED %v", time.Since(st.since).Round(time.Second))
		return b.String()
	}
	if total > 0 && rate > 0 && read > 0 {
		// Time left from the acknowledgement rate in bytes.
		ackedBytes := float64(s.tally.ackedBytes.Load())
		if ackedBytes > 0 {
			left := time.Duration(float64(total)-ackedBytes) * time.Duration(float64(elapsed)/ackedBytes)
			fmt.Fprintf(&b, " %v left", left.Round(time.Second))
		}
	}
	return b.String()
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// startProgress draws the progress line on stderr, a terminal, until the
// returned function is called, which clears the line. With every input a
// file of known size it shows percentages and the time left; otherwise
// (stdin, a pipe) counts and the rate only. When the run stalls, the
// stall's full text (brokers, since when, records waiting, when they
// fail) is printed once as its own line above the progress line, which
// then says STALLED.
func startProgress(stderr io.Writer, ins []input, s *sender) (stop func()) {
	var total int64
	for _, in := range ins {
		if in.size < 0 {
			total = -1
			break
		}
		total += in.size
	}
	width := termWidth(stderr)
	done := make(chan struct{})
	exited := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(exited)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		var shown *stall
		for {
			select {
			case <-done:
				fmt.Fprint(stderr, "\r\x1b[K")
				return
			case <-tick.C:
				if st := s.watch.state.Load(); st != nil && (shown == nil || len(shown.down) != len(st.down)) {
					fmt.Fprint(stderr, "\r\x1b[Kkpush produce: "+st.text(time.Now())+"\n")
					shown = st
				} else if st == nil {
					shown = nil
				}
				fmt.Fprint(stderr, "\r"+fitLine(progressLine(s, total, time.Since(start)), width)+"\x1b[K")
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}
