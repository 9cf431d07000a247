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

// TestProduce_KcatTeeFixedKeyNullEmpty: -T echoes each record sent to
// stdout as read, -k gives every record a key (a -K key wins), -Z sends
// an empty value as null.
func TestProduce_KcatTeeFixedKeyNullEmpty(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	code, stdout, errOut := runIn(t, strings.NewReader("a\nk2:b\n\n"), "-P", "-b"+strings.Join(c.Addrs(), ","), "-tt", "-T", "-kfixed", "-K:", "-Z", "-q")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if stdout != "a\nk2:b\n\n" {
		t.Fatalf("-T wrote %q", stdout)
	}
	checkRecords(t, readBack(t, c, "t"), []rec{
		{Key: []byte("fixed"), Value: []byte("a")},
		{Key: []byte("k2"), Value: []byte("b")},
		{Key: []byte("fixed"), Value: nil},
	})
}

// TestMetadata_ListsBrokersTopicsPartitions: kpush metadata (kcat -L).
func TestMetadata_ListsBrokersTopicsPartitions(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("orders", 2), kafkatest.WithTopic("audit", 1))
	addr := strings.Join(c.Addrs(), ",")
	for _, args := range [][]string{{"metadata", "-b", addr}, {"-L", "-b", addr}} {
		code, stdout, errOut := runIn(t, strings.NewReader(""), args...)
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, errOut)
		}
		for _, want := range []string{"1 brokers:\n  broker 0 at " + addr, "2 topics:\n", `topic "audit" with 1 partitions:`,
			`topic "orders" with 2 partitions:` + "\n    partition 0, leader 0, replicas: 0, isrs: 0\n    partition 1, leader 0"} {
			if !strings.Contains(stdout, want) {
				t.Fatalf("%q: output lacks %q:\n%s", args, want, stdout)
			}
		}
	}
	code, stdout, _ := runIn(t, strings.NewReader(""), "metadata", "-b", addr, "-t", "nope")
	if code != 1 || !strings.Contains(stdout, `topic "nope": UNKNOWN_TOPIC_OR_PARTITION`) {
		t.Fatalf("exit %d:\n%s", code, stdout)
	}
}

// TestProduce_FailedOutHoldingRecordsIsRefused: an earlier run's failures
// (to be replayed after a --resume) are never overwritten.
func TestProduce_FailedOutHoldingRecordsIsRefused(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	failed := filepath.Join(t.TempDir(), "failed.jsonl")
	earlier := `{"value":"x","source":"in.txt:7","error":"not written: delivery timeout expired"}` + "\n"
	if err := os.WriteFile(failed, []byte(earlier), 0o644); err != nil {
		t.Fatal(err)
	}
	code, errOut := produceTo(t, c, "a\n", "-t", "t", "--failed-out", failed)
	want := "kpush produce: --failed-out " + failed + " already holds records (from an earlier run?); replay or move it first, or name another file; see 'kpush produce -h'\n"
	if code != 2 || errOut != want {
		t.Fatalf("exit %d, stderr %q; want 2, %q", code, errOut, want)
	}
	if got, _ := os.ReadFile(failed); string(got) != earlier {
		t.Fatalf("%s changed to %q", failed, got)
	}
}

// TestProduce_CountReachingEndOfInputGivesNoResume: -c N on an input of
// exactly N records reads it all, so the summary must not claim reading
// stopped early or suggest a --resume that has nothing left to send.
func TestProduce_CountReachingEndOfInputGivesNoResume(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	in := filepath.Join(t.TempDir(), "in.txt")
	if err := os.WriteFile(in, []byte("a\nb\nc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, errOut := produceTo(t, c, "", "-t", "t", "-c", "3", in)
	if code != 0 || !strings.Contains(errOut, "3 sent, 0 failed") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Contains(errOut, "reading stopped") {
		t.Fatalf("the whole input was read, yet the summary says:\n%s", errOut)
	}
}
