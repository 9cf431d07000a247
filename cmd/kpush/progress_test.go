package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/kafkatest"
)

// underTerminal runs sh -c cmdline with stdout and stderr on a
// pseudo-terminal (util-linux script(1)) and returns what it showed.
func underTerminal(t *testing.T, cmdline string) string {
	t.Helper()
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("script(1) from util-linux is not installed; it provides the pseudo-terminal")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, script, "-q", "-e", "-c", cmdline, "/dev/null").CombinedOutput()
	if err != nil {
		t.Fatalf("%s under script: %v\n%q", cmdline, err, out)
	}
	return string(out)
}

// TestProduce_ProgressOnTerminal runs the binary with stderr on a
// pseudo-terminal and a file as input: the progress line must show the
// fraction read and the fraction acknowledged, and be cleared before the
// summary. From stdin (a pipe) it shows counts, no percentage. With stderr
// on a pipe no progress line appears at all.
func TestProduce_ProgressOnTerminal(t *testing.T) {
	bin := buildKpush(t)
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 3))
	// Slow the broker down so the run spans several progress ticks.
	f := c.Fake()
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		f.SleepControl(func() { time.Sleep(20 * time.Millisecond) })
		return nil, nil, false
	})

	in := filepath.Join(t.TempDir(), "in.txt")
	var b strings.Builder
	for i := range 20000 {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	if err := os.WriteFile(in, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"produce", "-b", strings.Join(c.Addrs(), ","), "-t", "t", "-X", "batch.size=4096"}
	cmdline := shellQuote(append(append([]string{bin}, args...), in))

	tty := underTerminal(t, cmdline)
	if !regexp.MustCompile(`\r\[[#.-]{20}\] read \d+% acked \d+% \d+ acked 0 failed \d+/s`).MatchString(tty) {
		t.Fatalf("no file progress line on the terminal:\n%q", tty)
	}
	if !strings.Contains(tty, "\r\x1b[Kkpush produce: 20000 sent, 0 failed") { // line cleared, then the summary
		t.Fatalf("summary missing:\n%q", tty)
	}

	tty = underTerminal(t, "cat "+shellQuote([]string{in})+" | "+shellQuote(append([]string{bin}, args...)))
	if !regexp.MustCompile(`\rread \d+ \([0-9.]+ [KM]?i?B\) \d+ acked 0 failed \d+/s`).MatchString(tty) || strings.Contains(tty, "% acked") {
		t.Fatalf("stdin progress must count records and bytes, without a percentage:\n%q", tty)
	}
	if got := len(readBack(t, c, "t")); got != 40000 {
		t.Fatalf("%d records written, want 40000", got)
	}

	// Not a terminal: no progress line, from a file or stdin.
	for _, stdin := range []string{"", b.String()} {
		a := args
		if stdin == "" {
			a = append(a, in)
		}
		stdout, stderr, err := runBin(t, stdin, bin, a...)
		if err != nil {
			t.Fatalf("kpush: %v\n%s", err, stderr)
		}
		if strings.Contains(stderr+stdout, "\r") || !strings.HasPrefix(stderr, "kpush produce: 20000 sent, 0 failed") {
			t.Fatalf("a pipe must get the summary only:\n%q", stderr)
		}
	}
}

// TestBench_ProgressOnTerminalOnly: bench's carriage-return progress goes
// to a terminal only; a pipe gets the plain table, a row per level.
func TestBench_ProgressOnTerminalOnly(t *testing.T) {
	bin := buildKpush(t)
	args := []string{bin, "bench", "-c", "1,10", "-d", "700ms"}
	tty := underTerminal(t, shellQuote(args))
	if !strings.Contains(tty, "\rC=1 ") || !strings.Contains(tty, "\rC=10 ") {
		t.Fatalf("no progress on the terminal:\n%q", tty)
	}
	if row := regexp.MustCompile(`\n +1 +\d+ `).FindStringIndex(tty); row == nil || row[0] > strings.Index(tty, "\rC=10 ") {
		t.Fatalf("the C=1 row must be printed when its level ends, before C=10 runs:\n%q", tty)
	}
	stdout, stderr, err := runBin(t, "", bin, args[1:]...)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr)
	}
	if strings.Contains(stdout+stderr, "\r") {
		t.Fatalf("carriage returns written to a pipe:\n%q\n%q", stdout, stderr)
	}
	rows := regexp.MustCompile(`(?m)^ +(1|10) +\d+ +\d+ `).FindAllString(stdout, -1)
	if len(rows) != 2 || !strings.Contains(stdout, "concurrency") {
		t.Fatalf("want a header and a row per level:\n%s", stdout)
	}
}

// shellQuote joins args for sh -c.
func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}
