package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kpush/kpush/kafkatest"
)

// runIn runs the command line with stdin.
func runIn(t *testing.T, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code = run(ctx, args, stdin, &out, &errb)
	return code, out.String(), errb.String()
}

// produceTo runs "kpush produce -b <c> args..." with stdin.
func produceTo(t *testing.T, c *kafkatest.Cluster, stdin string, args ...string) (code int, stderr string) {
	t.Helper()
	args = append([]string{"produce", "-b", strings.Join(c.Addrs(), ",")}, args...)
	code, _, stderr = runIn(t, strings.NewReader(stdin), args...)
	return code, stderr
}

// rec is a record as compared: nil and empty differ.
type rec struct {
	Key, Value []byte
	Headers    []kafkatest.Header
	Partition  int32
}

func readBack(t *testing.T, c *kafkatest.Cluster, topic string) []rec {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	all, err := c.ReadAll(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var out []rec
	for _, r := range all {
		out = append(out, rec{r.Key, r.Value, r.Headers, r.Partition})
	}
	return out
}

func checkRecords(t *testing.T, got, want []rec) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read back %d records:\n%s\nwant %d:\n%s", len(got), dump(got), len(want), dump(want))
	}
}

func dump(rs []rec) string {
	var b strings.Builder
	for _, r := range rs {
		var hs []string
		for _, h := range r.Headers {
			hs = append(hs, h.Key+"="+quoteNil(h.Value))
		}
		b.WriteString("  p" + string(rune('0'+r.Partition)) + " key=" + quoteNil(r.Key) + " value=" + quoteNil(r.Value) + " headers=" + strings.Join(hs, ",") + "\n")
	}
	return b.String()
}

func quoteNil(b []byte) string {
	if b == nil {
		return "nil"
	}
	return "\"" + strings.ReplaceAll(string(b), "\n", `\n`) + "\""
}

// byValue sorts records by value, for keyless records the sticky
// partitioner may spread.
func byValue(rs []rec) []rec {
	slices.SortFunc(rs, func(a, b rec) int { return bytes.Compare(a.Value, b.Value) })
	for i := range rs {
		rs[i].Partition = 0
	}
	return rs
}

func TestProduce_Lines(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 3))
	code, errOut := produceTo(t, c, "a\nb\n\nc", "-t", "t") // an empty line; no final newline
	if code != 0 || !strings.Contains(errOut, "4 sent, 0 failed") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	checkRecords(t, byValue(readBack(t, c, "t")),
		[]rec{{Value: []byte{}}, {Value: []byte("a")}, {Value: []byte("b")}, {Value: []byte("c")}})
}

func TestProduce_KeysHeadersPartition(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 3))
	code, errOut := produceTo(t, c, "k1\tv1\nno key\n\tempty key\nk2\tv\t2\r\n",
		"-t", "t", "-K", `\t`, "-H", "h=1", "-H", "h=2", "-H", "e=", "-p", "2", "-z", "zstd")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	hs := []kafkatest.Header{{Key: "h", Value: []byte("1")}, {Key: "h", Value: []byte("2")}, {Key: "e", Value: []byte{}}}
	checkRecords(t, readBack(t, c, "t"), []rec{
		{Key: []byte("k1"), Value: []byte("v1"), Headers: hs, Partition: 2},
		{Value: []byte("no key"), Headers: hs, Partition: 2},
		{Key: []byte{}, Value: []byte("empty key"), Headers: hs, Partition: 2},
		{Key: []byte("k2"), Value: []byte("v\t2\r"), Headers: hs, Partition: 2},
	})
}

func TestProduce_CustomDelimiters(t *testing.T) {
	for _, tc := range []struct {
		name, delim, input string
		want               []string
	}{
		{"pipe", "|", "a|b||c|", []string{"a", "b", "", "c"}},
		{"crlf", `\r\n`, "x\ry\r\nz\nw\r\n\r\n", []string{"x\ry", "z\nw", ""}},
		{"nul", `\0`, "one\x00two\nlines\x00", []string{"one", "two\nlines"}},
		{"hex", `\x1e`, "a\x1eb", []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
			if code, errOut := produceTo(t, c, tc.input, "-t", "t", "-D", tc.delim); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var want []rec
			for _, v := range tc.want {
				want = append(want, rec{Value: []byte(v)})
			}
			checkRecords(t, readBack(t, c, "t"), want)
		})
	}
}

func TestProduce_BinaryInputIsTakenAsIs(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	var in bytes.Buffer
	var want []rec
	for i := range 50 {
		v := make([]byte, 0, 300)
		for j := range 300 {
			if b := byte(i*7 + j*13); b != '\n' {
				v = append(v, b)
			}
		}
		in.Write(v)
		in.WriteByte('\n')
		want = append(want, rec{Value: v})
	}
	if code, errOut := produceTo(t, c, in.String(), "-t", "t"); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	checkRecords(t, readBack(t, c, "t"), want)
}

func TestProduce_JSON(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 3))
	input := strings.Join([]string{
		`{"key": "k1", "value": "v1", "headers": {"b": "2", "a": "1", "b": "3"}, "partition": 1}`,
		``,
		`{"key_b64": "AP8=", "value_b64": "AAEC/w==", "headers": [{"key": "x", "value_b64": "/w=="}, {"key": "n", "value": null}], "partition": 1}`,
		`  {"value": null, "partition": 2}  `,
		`{"key": "", "value": "", "partition": 2, "source": "ignored:1", "error": "ignored"}`,
		`{"key": "murmur", "value": "any partition"}`,
	}, "\n")
	code, errOut := produceTo(t, c, input, "-t", "t", "--format", "json", "-H", "from=cli")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	cli := kafkatest.Header{Key: "from", Value: []byte("cli")}
	got := readBack(t, c, "t")
	var murmur []rec
	got = slices.DeleteFunc(got, func(r rec) bool {
		if string(r.Key) == "murmur" {
			murmur = append(murmur, r)
			return true
		}
		return false
	})
	if len(murmur) != 1 || string(murmur[0].Value) != "any partition" {
		t.Fatalf("keyed record without a partition: %v", murmur)
	}
	checkRecords(t, got, []rec{
		{Key: []byte("k1"), Value: []byte("v1"), Partition: 1, Headers: []kafkatest.Header{cli,
			{Key: "b", Value: []byte("2")}, {Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("3")}}},
		{Key: []byte{0, 0xff}, Value: []byte{0, 1, 2, 0xff}, Partition: 1, Headers: []kafkatest.Header{cli,
			{Key: "x", Value: []byte{0xff}}, {Key: "n"}}},
		{Partition: 2, Headers: []kafkatest.Header{cli}},
		{Key: []byte{}, Value: []byte{}, Partition: 2, Headers: []kafkatest.Header{cli}},
	})
}

func TestProduce_JSONPartitionOverridesP(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 3))
	input := `{"value": "a"}` + "\n" + `{"value": "b", "partition": 0}` + "\n" + `{"value": "c", "partition": -1}`
	if code, errOut := produceTo(t, c, input, "-t", "t", "--format", "json", "-p", "2"); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	checkRecords(t, readBack(t, c, "t"), []rec{
		{Value: []byte("b"), Partition: 0}, {Value: []byte("a"), Partition: 2}, {Value: []byte("c"), Partition: 2},
	})
}

func TestProduce_InvalidPartitionFailsEachRecord(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 3))
	input := `{"value": "a", "partition": 3}` + "\n" + `{"value": "b"}`
	code, errOut := produceTo(t, c, input, "-t", "t", "--format", "json", "-p", "1")
	if code != 1 || !strings.Contains(errOut, "1 sent, 1 failed") || !strings.Contains(errOut, "not written: invalid partition") ||
		!strings.Contains(errOut, "at stdin:1\n") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	checkRecords(t, readBack(t, c, "t"), []rec{{Value: []byte("b"), Partition: 1}})
}

func TestProduce_MalformedJSON(t *testing.T) {
	input := strings.Join([]string{
		`{"value": "1"}`,
		`{"value": 2}`,
		`{"value": "3"}`,
		`not json`,
		`{"value": "5", "colour": "red"}`,
		`{"value": "6", "value_b64": "Ng=="}`,
		`{"value": "7"} {"value": "7b"}`,
		`{"value": "8", "partition": -2}`,
		`{"value": "9", "headers": "h"}`,
		`{"value_b64": "!!"}`,
		`{"value": "11"}`,
	}, "\n")
	t.Run("skip-bad", func(t *testing.T) {
		c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
		code, errOut := produceTo(t, c, input, "-t", "t", "--format", "json", "--skip-bad")
		if code != 0 || !strings.Contains(errOut, "3 sent, 0 failed, 8 skipped") {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		for _, want := range []string{"stdin:2: invalid JSON", "stdin:4: invalid JSON", `stdin:5: invalid JSON: unknown field "colour" (known: key`,
			"stdin:6: both value and value_b64", "stdin:7: invalid JSON: more than one value", "stdin:8: partition -2",
			"stdin:9: headers:", "stdin:10: value_b64:"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("stderr lacks %q:\n%s", want, errOut)
			}
		}
		checkRecords(t, readBack(t, c, "t"), []rec{{Value: []byte("1")}, {Value: []byte("3")}, {Value: []byte("11")}})
	})
	t.Run("stops", func(t *testing.T) {
		c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
		code, errOut := produceTo(t, c, input, "-t", "t", "--format", "json")
		if code != 1 || !strings.Contains(errOut, "kpush: stdin:2: invalid JSON") || !strings.Contains(errOut, "--skip-bad") {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		checkRecords(t, readBack(t, c, "t"), []rec{{Value: []byte("1")}})
	})
}

func TestProduce_UnknownTopicFailsEveryRecordIntoFailedOut(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 3))
	failed := filepath.Join(t.TempDir(), "failed.jsonl")
	input := "k1|v1\nk2|\xff\xfe\nno key\n"
	code, errOut := produceTo(t, c, input, "-t", "nope", "-K", "|", "-H", "h=x", "--failed-out", failed)
	if code != 1 || !strings.Contains(errOut, `3 failed`) || !strings.Contains(errOut, `not written: unknown topic "nope"`) ||
		!strings.Contains(errOut, "at stdin:1, stdin:2, stdin:3") || !strings.Contains(errOut, "3 of 3 records failed") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	data, err := os.ReadFile(failed)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	slices.Sort(lines) // callbacks may finish out of order
	want := []string{
		`{"key":"k1","value":"v1","headers":[{"key":"h","value":"x"}],"source":"stdin:1","error":"not written: unknown topic \"nope\""}`,
		`{"key":"k2","value_b64":"//4=","headers":[{"key":"h","value":"x"}],"source":"stdin:2","error":"not written: unknown topic \"nope\""}`,
		`{"value":"no key","headers":[{"key":"h","value":"x"}],"source":"stdin:3","error":"not written: unknown topic \"nope\""}`,
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("failed-out:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	// Nothing is lost: the failures replay as they were.
	if code, _, errOut := runIn(t, nil, "produce", "-b", c.Addrs()[0], "-t", "t", "-p", "0", "--format", "json", failed); code != 0 {
		t.Fatalf("replay: exit %d: %s", code, errOut)
	}
	hs := []kafkatest.Header{{Key: "h", Value: []byte("x")}}
	checkRecords(t, byValue(readBack(t, c, "t")), byValue([]rec{
		{Key: []byte("k1"), Value: []byte("v1"), Headers: hs},
		{Key: []byte("k2"), Value: []byte{0xff, 0xfe}, Headers: hs},
		{Value: []byte("no key"), Headers: hs},
	}))
}

func TestProduce_RecordLargerThanBatchSize(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	failed := filepath.Join(t.TempDir(), "failed.jsonl")
	big := strings.Repeat("x", 2000)
	code, errOut := produceTo(t, c, "small\n"+big+"\nsmall too\n", "-t", "t", "-X", "batch.size=1024", "--failed-out", failed)
	if code != 1 || !strings.Contains(errOut, "record too large: 2022 bytes encoded, -X batch.size=1024 fits at most 963") ||
		!strings.Contains(errOut, "at stdin:2\n") || !strings.Contains(errOut, "2 sent, 1 failed") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	data, _ := os.ReadFile(failed)
	if !strings.HasPrefix(string(data), `{"value":"`+big+`","source":"stdin:2"`) || strings.Count(string(data), "\n") != 1 {
		t.Fatalf("failed-out %q", data)
	}
	checkRecords(t, readBack(t, c, "t"), []rec{{Value: []byte("small")}, {Value: []byte("small too")}})
}

func TestProduce_LineOverMemoryLimitIsDropped(t *testing.T) {
	old := maxLineBytes
	maxLineBytes = 100
	t.Cleanup(func() { maxLineBytes = old })
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	failed := filepath.Join(t.TempDir(), "failed.jsonl")
	code, errOut := produceTo(t, c, "a\n"+strings.Repeat("y", 500)+"\nb\n"+strings.Repeat("z", 101), "-t", "t", "--failed-out", failed)
	if code != 1 || !strings.Contains(errOut, "line longer than 100 bytes (dropped unread") ||
		!strings.Contains(errOut, "at stdin:2, stdin:4\n") || !strings.Contains(errOut, "2 sent, 2 failed") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if data, _ := os.ReadFile(failed); len(data) != 0 {
		t.Fatalf("failed-out has dropped lines: %q", data)
	}
	checkRecords(t, readBack(t, c, "t"), []rec{{Value: []byte("a")}, {Value: []byte("b")}})
}

func TestProduce_FilesAndStdin(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	dir := t.TempDir()
	f1, f2 := filepath.Join(dir, "one.txt"), filepath.Join(dir, "two.txt")
	os.WriteFile(f1, []byte("1a\n1b\n"), 0o644)
	os.WriteFile(f2, []byte("2a\n"), 0o644)
	code, _, errOut := runIn(t, strings.NewReader("stdin\n"), "produce", "-b", c.Addrs()[0], "-t", "t", f1, "-", f2)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	checkRecords(t, readBack(t, c, "t"), []rec{{Value: []byte("1a")}, {Value: []byte("1b")}, {Value: []byte("stdin")}, {Value: []byte("2a")}})

	code, _, errOut = runIn(t, nil, "produce", "-b", c.Addrs()[0], "-t", "t", f1, filepath.Join(dir, "missing"))
	if code != 1 || !strings.Contains(errOut, "missing: no such file") {
		t.Fatalf("missing file: exit %d: %s", code, errOut)
	}
	code, _, errOut = runIn(t, nil, "produce", "-b", c.Addrs()[0], "-t", "t", "--failed-out", f1, f1)
	if code != 2 || !strings.Contains(errOut, "also an input") {
		t.Fatalf("failed-out = input: exit %d: %s", code, errOut)
	}
	if data, _ := os.ReadFile(f1); string(data) != "1a\n1b\n" {
		t.Fatalf("input overwritten: %q", data)
	}
}

func TestProduce_EmptyInput(t *testing.T) {
	// No record, so no connection: even an unreachable broker is fine.
	for _, format := range []string{"line", "json"} {
		code, _, errOut := runIn(t, strings.NewReader(""), "produce", "-b", "127.0.0.1:1", "-t", "t", "--format", format)
		if code != 0 || !strings.Contains(errOut, "0 sent, 0 failed, 0 skipped") {
			t.Fatalf("%s: exit %d: %s", format, code, errOut)
		}
	}
}

func TestProduce_UnreachableBrokerFailsInBoundedTime(t *testing.T) {
	start := time.Now()
	code, _, errOut := runIn(t, strings.NewReader("a\nb\nc\n"), "produce", "-b", "127.0.0.1:1", "-t", "t",
		"-X", "message.timeout.ms=2000")
	if code != 1 || !strings.Contains(errOut, "no broker reachable within 1s") || !strings.Contains(errOut, "connection refused") ||
		!strings.Contains(errOut, "3 of 3 records failed") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestProduce_InterruptReturnsPromptly(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() {
		done <- run(ctx, []string{"produce", "-b", c.Addrs()[0], "-t", "t"}, pr, io.Discard, &errb)
	}()
	if _, err := pw.Write([]byte("first\n")); err != nil { // read, then the reader blocks
		t.Fatal(err)
	}
	cancel()
	select {
	case code := <-done:
		if code != 1 || !strings.Contains(errb.String(), "interrupted") {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		// Ctrl-C says where to resume: before or after "first".
		if !regexp.MustCompile(`reading stopped at stdin line (1, byte 0|2, byte 6); to send the rest: kpush produce \.\.\. --resume stdin:`).MatchString(errb.String()) {
			t.Fatalf("no resume position after the interrupt:\n%s", errb.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("produce did not return within 15s of the interrupt")
	}
}

func TestProduce_UsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown property", []string{"-X", "foo.bar=1"}, `unknown property "foo.bar"`},
		{"property without value", []string{"-X", "acks=all", "-X", "sasl.password:secret"}, "-X argument 2 is not prop=value"},
		{"bad acks", []string{"-X", "acks=2"}, "-X acks=2"},
		{"bad linger", []string{"-X", "linger.ms=soon"}, "-X linger.ms=soon"},
		{"negative linger", []string{"-X", "linger.ms=-1"}, "-X linger.ms=-1"},
		{"small batch.size", []string{"-X", "batch.size=10"}, "-X batch.size=10"},
		{"bad idempotence", []string{"-X", "enable.idempotence=maybe"}, "-X enable.idempotence=maybe"},
		{"bad compression.type", []string{"-X", "compression.type=brotli"}, "-X compression.type=brotli"},
		{"bad compression.codec", []string{"-X", "compression.codec=brotli"}, "-X compression.codec=brotli"},
		{"zero message.timeout", []string{"-X", "message.timeout.ms=0"}, "-X message.timeout.ms=0"},
		{"bad request.timeout", []string{"-X", "request.timeout.ms=x"}, "-X request.timeout.ms=x"},
		{"timeouts disagree", []string{"-X", "message.timeout.ms=1000", "-X", "request.timeout.ms=5000"}, "message.timeout.ms=1000 must be at least"},
		{"idempotence needs acks=all", []string{"-X", "acks=1", "-X", "enable.idempotence=true"}, "-X enable.idempotence=true needs -X acks=all"},
		{"bad -z", []string{"-z", "brotli"}, "-z"},
		{"bad broker", []string{"-b", "nohost"}, `-b: "nohost" is not host:port`},
		{"no -b", []string{"-b", ""}, "-b is required"},
		{"no -t", []string{"-t", ""}, "-t is required"},
		{"bad -p", []string{"-p", "-2"}, "-p: -2"},
		{"bad -K escape", []string{"-K", `\q`}, `-K: "\\q": unknown escape`},
		{"bad -D escape", []string{"-D", `\x4`}, `-D: "\\x4": \x needs two hex digits`},
		{"bad -H", []string{"-H", "novalue"}, `"novalue" is not name=value`},
		{"bad format", []string{"--format", "xml"}, `--format: "xml"`},
		{"skip-bad without json", []string{"--skip-bad"}, "--skip-bad needs --format json"},
		{"unknown flag", []string{"--nope"}, "unknown option --nope; see 'kpush produce -h'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"produce", "-b", "127.0.0.1:9092", "-t", "t"}, tc.args...)
			code, _, errOut := runIn(t, strings.NewReader("x\n"), args...)
			if code != 2 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, want 2; stderr lacks %q:\n%s", code, tc.want, errOut)
			}
			if strings.Contains(errOut, "secret") {
				t.Fatalf("stderr repeats a secret:\n%s", errOut)
			}
		})
	}
}

func TestProduce_PropertiesReachTheProducer(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	code, errOut := produceTo(t, c, "a\nb\n", "-t", "t", "-X", "acks=1", "-X", "linger.ms=5", "-X", "batch.size=2048",
		"-X", "enable.idempotence=false", "-X", "compression.codec=gzip", "-X", "client.id=cli-test",
		"-X", "message.timeout.ms=20000", "-X", "request.timeout.ms=5000", "-P")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	recs, err := c.ReadAll(ctx, "t")
	if err != nil || len(recs) != 2 {
		t.Fatalf("%v %v", recs, err)
	}
	if recs[0].ProducerID != -1 {
		t.Fatalf("enable.idempotence=false still used producer ID %d", recs[0].ProducerID)
	}
}
