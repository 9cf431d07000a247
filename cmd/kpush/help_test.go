package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kpush/kpush"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Fatalf("output differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestHelp_Golden(t *testing.T) {
	for _, tc := range []struct {
		file string
		args []string
	}{
		{"help-kpush.golden", []string{"-h"}},
		{"help-dev.golden", []string{"dev", "-h"}},
		{"help-produce.golden", []string{"produce", "-h"}},
		{"help-bench.golden", []string{"bench", "-h"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			code, out, errOut := runCmd(t, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d", code)
			}
			help := out + errOut
			if !strings.Contains(help, "\nExamples:\n") {
				t.Errorf("help has no Examples section")
			}
			golden(t, tc.file, help)
		})
	}
}

func TestProduce_SummaryGolden(t *testing.T) {
	tl := &tally{batchBytes: 1024, groups: map[string]*reasonGroup{}}
	tl.sent.Store(1234)
	for i := 1; i <= 13; i++ {
		tl.fail(&item{name: "in.txt", line: i * 10}, &kpush.ProduceError{Topic: "t", Partition: -1, Err: &kpush.RecordTooLargeError{Size: 1500, Limit: 963, Option: "WithMaxBatchBytes"}})
	}
	tl.fail(&item{name: "in.txt", line: 7}, &kpush.ProduceError{Topic: "t", Partition: 2, Unknown: true, Err: kpush.ErrDeliveryTimeout})
	tl.fail(&item{name: "stdin", line: 1, tooLong: 1 << 30}, errors.New("line longer than 67108864 bytes (dropped unread, not in --failed-out)"))
	tl.skip(&item{name: "in.txt", line: 3, bad: errors.New("invalid JSON: unexpected end of JSON input")})
	tl.notWritten, tl.unknown = outFile{name: "failed.jsonl", n: 13}, outFile{name: "failed.unknown.jsonl", n: 1}
	var b bytes.Buffer
	tl.writeSummary(&b, 1500*time.Millisecond)
	golden(t, "produce-summary.golden", b.String())
}
