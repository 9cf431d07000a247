package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/kafkatest"
)

// TestProduce_ProgressOnTerminal runs the binary with stderr on a
// pseudo-terminal (util-linux script(1)) and a file as input: the progress
// line must appear, end at 100%, and be cleared before the summary. With
// stderr on a pipe it must not appear at all.
func TestProduce_ProgressOnTerminal(t *testing.T) {
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("script(1) from util-linux is not installed; it provides the pseudo-terminal")
	}
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
	args := []string{"produce", "-b", strings.Join(c.Addrs(), ","), "-t", "t", "-X", "batch.size=4096", in}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, script, "-q", "-e", "-c", shellQuote(append([]string{bin}, args...)), "/dev/null").CombinedOutput()
	if err != nil {
		t.Fatalf("kpush under script: %v\n%s", err, out)
	}
	tty := string(out)
	if !strings.Contains(tty, "\r[") || !strings.Contains(tty, "%  ") {
		t.Fatalf("no progress line on the terminal:\n%q", tty)
	}
	if !strings.Contains(tty, "      \rkpush produce: 20000 sent, 0 failed") { // line cleared, then the summary
		t.Fatalf("summary missing:\n%q", tty)
	}
	if got := len(readBack(t, c, "t")); got != 20000 {
		t.Fatalf("%d records written, want 20000", got)
	}

	// Not a terminal: no progress line.
	stdout, stderr, err := runBin(t, "", bin, args...)
	if err != nil {
		t.Fatalf("kpush: %v\n%s", err, stderr)
	}
	if strings.Contains(stderr+stdout, "\r[") {
		t.Fatalf("progress line written to a pipe:\n%q", stderr)
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
