package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// buildKpush builds the kpush binary into a temporary directory.
func buildKpush(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "kpush")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startDevProcess runs "kpush dev args" as a process and returns its
// bootstrap address. Cleanup interrupts it and expects exit code 0.
func startDevProcess(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"dev"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("kpush dev after Ctrl-C: %v\n%s", err, stderr.String())
			}
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			t.Errorf("kpush dev still running 15s after Ctrl-C")
		}
	})
	bootstrap := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "bootstrap: "); ok {
				bootstrap <- rest
			}
		}
		exited <- cmd.Wait() // after stdout is drained
	}()
	select {
	case addr := <-bootstrap:
		return addr
	case <-time.After(15 * time.Second):
		t.Fatalf("kpush dev printed no bootstrap line within 15s; stderr: %s", stderr.String())
	}
	return ""
}

// runBin runs the binary with stdin, bounded to 60s.
func runBin(t *testing.T, stdin string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// TestE2E_DevProduceConsume builds kpush, runs "kpush dev" as a process,
// produces with "kpush produce" from a file and reads back with franz-go,
// then with kcat; and kcat produces into "kpush dev" in turn.
func TestE2E_DevProduceConsume(t *testing.T) {
	bin := buildKpush(t)
	addr := startDevProcess(t, bin, "-topic", "e2e:3", "-topic", "fromkcat:2")

	var lines []string
	for i := range 60 {
		lines = append(lines, "key"+string(rune('a'+i%26))+string(rune('0'+i/26))+"\tvalue "+strings.Repeat("x", i))
	}
	file := filepath.Join(t.TempDir(), "in.txt")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := runBin(t, "", bin, "produce", "-b", addr, "-t", "e2e", "-K", `\t`, "-H", "src=e2e", "-z", "lz4", file)
	if err != nil || !strings.Contains(errOut, "60 sent, 0 failed") {
		t.Fatalf("kpush produce: %v\n%s", err, errOut)
	}

	// Keys, values, headers and partitions, read by a plain consumer.
	part := kgo.StickyKeyPartitioner(nil).ForTopic("e2e")
	var got []string
	for _, r := range consume(t, []string{addr}, "e2e", len(lines)) {
		if want := part.Partition(&kgo.Record{Key: r.Key}, 3); int32(want) != r.Partition {
			t.Errorf("key %q in partition %d, want murmur2's %d", r.Key, r.Partition, want)
		}
		if len(r.Headers) != 1 || r.Headers[0].Key != "src" || string(r.Headers[0].Value) != "e2e" {
			t.Errorf("key %q: headers %v", r.Key, r.Headers)
		}
		got = append(got, string(r.Key)+"\t"+string(r.Value))
	}
	want := slices.Sorted(slices.Values(lines))
	if slices.Sort(got); !slices.Equal(got, want) {
		t.Fatalf("consumed %q\nwant %q", got, want)
	}

	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not installed; .ci/run installs it")
	}
	out, errOut, err := runBin(t, "", kcat, "-C", "-b", addr, "-t", "e2e", "-e", "-q", "-f", `%k\t%s\n`,
		"-X", "broker.version.fallback=2.8.0")
	if err != nil {
		t.Fatalf("kcat -C: %v\n%s", err, errOut)
	}
	got = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if slices.Sort(got); !slices.Equal(got, want) {
		t.Fatalf("kcat consumed %q\nwant %q", got, want)
	}

	// kcat produces into kpush dev.
	_, errOut, err = runBin(t, "k1\tv1\nk2\tv2\n", kcat, "-P", "-b", addr, "-t", "fromkcat", "-p", "1", "-K", "\t",
		"-H", "via=kcat", "-X", "broker.version.fallback=2.8.0")
	if err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, errOut)
	}
	recs := consume(t, []string{addr}, "fromkcat", 2)
	for i, r := range recs {
		k, v := "k"+string(rune('1'+i)), "v"+string(rune('1'+i))
		if string(r.Key) != k || string(r.Value) != v || r.Partition != 1 ||
			len(r.Headers) != 1 || r.Headers[0].Key != "via" || string(r.Headers[0].Value) != "kcat" {
			t.Fatalf("record %d: key %q value %q partition %d headers %v", i, r.Key, r.Value, r.Partition, r.Headers)
		}
	}
}
