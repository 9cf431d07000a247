package main

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/kpush/kpush"
)

// readRecords splits input with recordReader; dropped records appear as
// "<dropped N>".
func readRecords(t *testing.T, r io.Reader, delim string, max int) []string {
	t.Helper()
	rr := newRecordReader(r, []byte(delim), max)
	var out []string
	for {
		rec, tooLong, err := rr.next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if tooLong > 0 {
			if rec != nil {
				t.Fatal("dropped record has bytes")
			}
			out = append(out, "<dropped "+strconv.FormatInt(tooLong, 10)+">")
			continue
		}
		if rec == nil {
			t.Fatal("nil record")
		}
		out = append(out, string(rec))
	}
}

func TestRecordReader(t *testing.T) {
	for _, tc := range []struct {
		name, in, delim string
		max             int
		want            []string
	}{
		{"empty", "", "\n", 10, nil},
		{"one empty record", "\n", "\n", 10, []string{""}},
		{"no final delimiter", "a\nb", "\n", 10, []string{"a", "b"}},
		{"multi-byte", "a\r\nb\rc\r\n\r\n", "\r\n", 10, []string{"a", "b\rc", ""}},
		{"partial delimiter at end", "a\r", "\r\n", 10, []string{"a\r"}},
		{"overlapping delimiter bytes", "a::b:::c", "::", 10, []string{"a", "b", ":c"}},
		{"at the limit", "12345\n123456\n", "\n", 5, []string{"12345", "<dropped 6>"}},
		{"multi-byte at the limit", "12345\r\n123456\r\nx", "\r\n", 5, []string{"12345", "<dropped 6>", "x"}},
		{"too long, last", "ok\n" + strings.Repeat("z", 100), "\n", 50, []string{"ok", "<dropped 100>"}},
		{"too long, bigger than the buffer", strings.Repeat("q", 200_000) + "\nafter\n", "\n", 1000, []string{"<dropped 200000>", "after"}},
		{"long, kept", strings.Repeat("q", 200_000) + "\n", "\n", 300_000, []string{strings.Repeat("q", 200_000)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []io.Reader{strings.NewReader(tc.in), iotest.OneByteReader(strings.NewReader(tc.in))} {
				if got := readRecords(t, r, tc.delim, tc.max); !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("got %q, want %q", got, tc.want)
				}
			}
		})
	}
}

func TestRecordReader_ReadError(t *testing.T) {
	rr := newRecordReader(iotest.TimeoutReader(strings.NewReader(strings.Repeat("a", 100_000))), []byte("\n"), 1<<20)
	if _, _, err := rr.next(); !errors.Is(err, iotest.ErrTimeout) {
		t.Fatalf("err %v", err)
	}
}

func FuzzRecordReader(f *testing.F) {
	f.Add([]byte("a\nb\n\nc"), []byte("\n"))
	f.Add([]byte("x\r\ny\r\r\n"), []byte("\r\n"))
	f.Fuzz(func(t *testing.T, in, delim []byte) {
		if len(delim) == 0 || len(delim) > 8 {
			return
		}
		rr := newRecordReader(bytes.NewReader(in), delim, 1<<20)
		var recs [][]byte
		for {
			rec, _, err := rr.next()
			if err != nil {
				break
			}
			recs = append(recs, rec)
		}
		// Joining the records gives the input back, up to a final delimiter.
		joined := bytes.Join(recs, delim)
		if !bytes.Equal(joined, in) && !bytes.Equal(append(joined, delim...), in) {
			t.Fatalf("records %q of %q with delimiter %q", recs, in, delim)
		}
	})
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`\t`: "\t", `\r\n`: "\r\n", `\0`: "\x00", `\\`: `\`, `\x1e`: "\x1e", `a|b`: "a|b", `\xff\x00`: "\xff\x00",
	} {
		got, err := unescape(in)
		if err != nil || string(got) != want {
			t.Errorf("unescape(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{`\`, `\q`, `\x`, `\x1`, `\xzz`} {
		if _, err := unescape(in); err == nil {
			t.Errorf("unescape(%q) succeeded", in)
		}
	}
}

func TestJSONLine_RoundTrip(t *testing.T) {
	r := kpush.Record{Key: []byte{}, Value: []byte("caf\xc3\xa9 <&>\x00\"\n"), Partition: 7,
		Headers: []kpush.Header{{Key: "b", Value: []byte{0xff}}, {Key: "n"}, {Key: "e", Value: []byte{}}, {Key: "b", Value: []byte("2")}}}
	line := appendJSONLine(nil, &r, true, "in.txt:3", `not written: "why"`)
	want := `{"key":"","value":"café <&>\u0000\"\n","headers":[{"key":"b","value_b64":"/w=="},{"key":"n","value":null},` +
		`{"key":"e","value":""},{"key":"b","value":"2"}],"partition":7,"source":"in.txt:3","error":"not written: \"why\""}` + "\n"
	if string(line) != want {
		t.Fatalf("got  %s\nwant %s", line, want)
	}
	var back kpush.Record
	explicit, err := parseJSONLine(line, &back)
	if err != nil || !explicit || !reflect.DeepEqual(back, r) {
		t.Fatalf("parsed back %+v, %v, %v", back, explicit, err)
	}
}

func FuzzJSONLine(f *testing.F) {
	for _, s := range []string{
		`{"key": "k", "value": "v", "headers": {"a": "1", "a": null}, "partition": 2}`,
		`{"key_b64": "AP8=", "value_b64": "", "headers": [{"key": "x", "value_b64": "/w=="}]}`,
		`{"value": null, "partition": -1}`,
		`{"value": "\u00e9\ud83d\ude00", "source": "x:1", "error": "e"}`,
		`[1]`, `{"value": "a"} x`, `{"headers": {"k": 1}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var r kpush.Record
		explicit, err := parseJSONLine(line, &r)
		if err != nil {
			return
		}
		out := appendJSONLine(nil, &r, explicit, "f:1", "reason")
		var back kpush.Record
		explicit2, err := parseJSONLine(out, &back)
		if err != nil {
			t.Fatalf("re-parse %s: %v", out, err)
		}
		if explicit2 != explicit || !reflect.DeepEqual(back, r) {
			t.Fatalf("round trip of %q via %s: got %+v, want %+v", line, out, back, r)
		}
	})
}
