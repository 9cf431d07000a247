package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/kafkatest"
)

// TestProduce_CountStopsAndResumeFromFile: -c stops after N records of a
// file, the summary names FILE:LINE and the byte offset of the first
// record not sent, and --resume sends the rest: each record once, in
// order. No --failed-out file is left when nothing failed.
func TestProduce_CountStopsAndResumeFromFile(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	dir := t.TempDir()
	in := filepath.Join(dir, "in.txt")
	var want []rec
	var b strings.Builder
	for i := 1; i <= 10; i++ {
		fmt.Fprintf(&b, "line-%d\n", i)
		want = append(want, rec{Value: []byte(fmt.Sprintf("line-%d", i))})
	}
	if err := os.WriteFile(in, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	failed := filepath.Join(dir, "failed.jsonl")
	code, errOut := produceTo(t, c, "", "-t", "t", "-c", "4", "--failed-out", failed, in)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	offset := strings.Index(b.String(), "line-5")
	wantStop := fmt.Sprintf("reading stopped at %s line 5, byte %d; to send the rest: kpush produce ... --resume %s:5:%d\n", in, offset, in, offset)
	if !strings.Contains(errOut, "4 sent, 0 failed") || !strings.Contains(errOut, wantStop) {
		t.Fatalf("summary lacks %q:\n%s", wantStop, errOut)
	}
	for _, f := range []string{failed, unknownName(failed)} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s exists though nothing failed (%v)", f, err)
		}
	}
	pos := regexp.MustCompile(`--resume (\S+)`).FindStringSubmatch(errOut)[1]
	if code, errOut = produceTo(t, c, "", "-t", "t", in, "--resume", pos, "-q"); code != 0 || errOut != "" {
		t.Fatalf("resume: exit %d, stderr %q (want nothing with -q)", code, errOut)
	}
	checkRecords(t, readBack(t, c, "t"), want)
}

// TestProduce_OutcomeUnknownKeptApartFromNotWritten: records sent but never
// acknowledged (the broker cuts every produce connection) may have been
// written, so they go to the --unknown-out file, not to the replayable
// --failed-out one, which is not even created.
func TestProduce_OutcomeUnknownKeptApartFromNotWritten(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	f := c.Fake()
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		return nil, errors.New("cut"), true // close the connection: the request was sent
	})
	dir := t.TempDir()
	failed := filepath.Join(dir, "failed.jsonl")
	code, errOut := produceTo(t, c, "a\nb\n", "-t", "t", "-X", "message.timeout.ms=1500", "--failed-out", failed)
	if code != 1 || !strings.Contains(errOut, "outcome unknown") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(failed); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s exists, but no record was definitely not written (%v):\n%s", failed, err, errOut)
	}
	got, err := os.ReadFile(unknownName(failed))
	if err != nil || strings.Count(string(got), "\n") != 2 {
		t.Fatalf("%s: %v\n%s", unknownName(failed), err, got)
	}
	if !strings.Contains(errOut, "2 records with an unknown outcome are in "+unknownName(failed)+": they may have been written") {
		t.Fatalf("summary does not say the unknown-outcome file may duplicate:\n%s", errOut)
	}
}
