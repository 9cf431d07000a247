package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// lockedBuffer is a bytes.Buffer safe for a process's writes and the
// test's reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startDevToKill runs "kpush dev" as a process to be killed with SIGKILL;
// it returns the bootstrap address and the kill function.
func startDevToKill(t *testing.T, bin string, args ...string) (addr string, kill func()) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"dev"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var once sync.Once
	kill = func() {
		once.Do(func() {
			cmd.Process.Kill()
			<-exited
		})
	}
	t.Cleanup(kill)
	bootstrap := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "bootstrap: "); ok {
				bootstrap <- rest
			}
		}
		cmd.Wait()
		close(exited)
	}()
	select {
	case addr = <-bootstrap:
		return addr, kill
	case <-time.After(15 * time.Second):
		t.Fatal("kpush dev printed no bootstrap line within 15s")
	}
	return "", nil
}

// jsonValues reads the "value" of each line of a --failed-out file; a
// missing file has none.
func jsonValues(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var jl struct{ Value string }
		if err := json.Unmarshal([]byte(line), &jl); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		vals = append(vals, jl.Value)
	}
	return vals
}

// TestProduce_DeadBrokerStopsAndResumes: "kpush dev" is killed (SIGKILL)
// while "kpush produce" reads a stdin that stays open. Produce must say
// which broker is unreachable, stop reading once records fail, and exit
// with the position reading stopped at, within message.timeout.ms plus a
// few seconds (before: it read on, failing records wave after wave, until
// the input ended). Resuming from that position on a new broker, then
// replaying the not-written records, must leave every record written
// exactly once across the two brokers' logs.
func TestProduce_DeadBrokerStopsAndResumes(t *testing.T) {
	bin := buildKpush(t)
	const total, half = 10000, 5000
	line := func(i int) string { return fmt.Sprintf("rec-%05d", i) }
	var all strings.Builder
	for i := 1; i <= total; i++ {
		all.WriteString(line(i) + "\n")
	}
	input := all.String()
	firstHalf := strings.Index(input, line(half+1))

	addrA, killA := startDevToKill(t, bin, "-topic", "t:3")
	// Everything broker A logs, read as it arrives.
	seenA := map[string]int{}
	var seenMu sync.Mutex
	haveHalf := make(chan struct{})
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrA), kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	cctx, stopConsumer := context.WithCancel(context.Background())
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		for cctx.Err() == nil {
			fs := cl.PollFetches(cctx)
			seenMu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				seenA[string(r.Value)]++
				if len(seenA) == half {
					close(haveHalf)
				}
			})
			seenMu.Unlock()
		}
	}()
	defer func() { stopConsumer(); <-consumerDone; cl.Close() }()

	dir := t.TempDir()
	failed := filepath.Join(dir, "failed.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "produce", "-b", addrA, "-t", "t", "-X", "message.timeout.ms=5000", "--failed-out", failed)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if _, err := io.WriteString(stdin, input[:firstHalf]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-haveHalf:
	case <-time.After(30 * time.Second):
		t.Fatalf("broker A logged %d of the first %d records within 30s; stderr:\n%s", len(seenA), half, stderr.String())
	}
	killA()
	killed := time.Now()
	go io.WriteString(stdin, input[firstHalf:]) // stdin stays open: produce must stop by itself

	var runErr error
	select {
	case runErr = <-exited:
	case <-time.After(40 * time.Second):
		t.Fatalf("produce still running 40s after the broker died (message.timeout.ms=5000); stderr:\n%s", stderr.String())
	}
	after := time.Since(killed)
	out := stderr.String()
	t.Logf("produce exited %v after the kill:\n%s", after, out)
	if ee, ok := runErr.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("produce: %v, want exit status 1", runErr)
	}
	if after > 25*time.Second {
		t.Errorf("verdict %v after the kill, want within message.timeout.ms (5s) plus a few seconds", after)
	}
	for _, want := range []string{"waiting for broker " + addrA + ": unreachable, nothing acknowledged since", "records wait, failing from",
		"stopped reading: no broker reachable (" + addrA + " unreachable, nothing acknowledged since"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	m := regexp.MustCompile(`reading stopped at stdin line (\d+), byte (\d+); to send the rest: kpush produce \.\.\. --resume (stdin:\d+:\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no resume position in the summary")
	}
	stopLine, _ := strconv.Atoi(m[1])
	stopByte, _ := strconv.Atoi(m[2])
	want := len(input) // all read, stdin still open
	if stopLine <= total {
		want = strings.Index(input, line(stopLine))
	}
	if stopLine < half+1 || stopLine > total+1 || stopByte != want {
		t.Fatalf("stopped at line %d byte %d; line %d starts at byte %d (and must be past the first %d)", stopLine, stopByte, stopLine, want, half)
	}
	sm := regexp.MustCompile(`kpush produce: (\d+) sent, (\d+) failed`).FindStringSubmatch(out)
	if sm == nil {
		t.Fatal("no counts in the summary")
	}
	sent, _ := strconv.Atoi(sm[1])
	notWritten := jsonValues(t, failed)
	unknown := jsonValues(t, unknownName(failed))
	if sent+len(notWritten)+len(unknown) != stopLine-1 {
		t.Fatalf("%d sent + %d not written + %d unknown != %d records before the stop position", sent, len(notWritten), len(unknown), stopLine-1)
	}
	stdin.Close()

	// Resume on a fresh broker, then replay what was definitely not written.
	addrB := startDevProcess(t, bin, "-topic", "t:3")
	if _, errOut, err := runBin(t, input, bin, "produce", "-b", addrB, "-t", "t", "--resume", m[3]); err != nil {
		t.Fatalf("resume: %v\n%s", err, errOut)
	}
	if len(notWritten) > 0 {
		if _, errOut, err := runBin(t, "", bin, "produce", "-b", addrB, "-t", "t", "--format", "json", failed); err != nil {
			t.Fatalf("replay: %v\n%s", err, errOut)
		}
	}
	inB := map[string]int{}
	for _, r := range consume(t, []string{addrB}, "t", total-(stopLine-1)+len(notWritten)) {
		inB[string(r.Value)]++
	}
	seenMu.Lock()
	defer seenMu.Unlock()
	isUnknown := map[string]bool{}
	for _, v := range unknown {
		isUnknown[v] = true
	}
	for i := 1; i <= total; i++ {
		v := line(i)
		switch {
		case inB[v] > 1 || seenA[v] > 1:
			t.Errorf("%s written %d times to A, %d times to B", v, seenA[v], inB[v])
		case inB[v] == 1 && seenA[v] == 1:
			t.Errorf("%s duplicated: in A and replayed or resumed into B", v)
		case inB[v]+seenA[v] == 0 && !isUnknown[v]:
			t.Errorf("%s lost: in neither log nor in the outcome-unknown file", v)
		}
	}
	t.Logf("A logged %d, B %d; %d not written (replayed), %d outcome unknown; stopped at line %d", len(seenA), len(inB), len(notWritten), len(unknown), stopLine)
}
