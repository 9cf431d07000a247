package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code = run(ctx, args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestBench_EmbeddedBrokerTable(t *testing.T) {
	code, out, errOut := runCmd(t, "bench", "-c", "1,50", "-d", "200ms")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"broker: embedded", "concurrency", "records/s", "cpu µs/record", "p99 µs"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var rows int
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 7 && (f[0] == "1" || f[0] == "50") {
			rows++
			if f[1] == "0" {
				t.Fatalf("no records sent at C=%s:\n%s", f[0], out)
			}
		}
	}
	if rows != 2 {
		t.Fatalf("want 2 result rows:\n%s", out)
	}
}

func TestBench_JSON(t *testing.T) {
	code, out, errOut := runCmd(t, "bench", "-c", "10", "-d", "100ms", "-keyed", "-z", "lz4", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var res []levelResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(res) != 1 || res[0].Concurrency != 10 || res[0].Records == 0 || res[0].Failed != 0 {
		t.Fatalf("results %+v", res)
	}
}

func TestBench_UsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad level", []string{"bench", "-c", "1,x"}, "-c"},
		{"zero level", []string{"bench", "-c", "0"}, "-c"},
		{"bad codec", []string{"bench", "-z", "brotli"}, "-z"},
		{"bad acks", []string{"bench", "-acks", "2"}, "-acks"},
		{"unknown flag", []string{"bench", "-nope"}, "nope"},
		{"extra argument", []string{"bench", "extra"}, "extra"},
		{"negative size", []string{"bench", "-s", "-1"}, "-s"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"no command", nil, "Usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCmd(t, tc.args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2 (usage)", code)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Fatalf("stderr %q lacks %q", errOut, tc.want)
			}
		})
	}
}

func TestBench_HelpHasExamples(t *testing.T) {
	code, _, errOut := runCmd(t, "bench", "-h")
	if code != 0 || !strings.Contains(errOut, "Examples:") || !strings.Contains(errOut, "kpush bench -b") {
		t.Fatalf("exit %d, help:\n%s", code, errOut)
	}
}

func TestBench_UnreachableBrokerFailsInBoundedTime(t *testing.T) {
	start := time.Now()
	code, _, errOut := runCmd(t, "bench", "-b", "127.0.0.1:1", "-c", "1", "-d", "100ms")
	if code != 1 || !strings.Contains(errOut, "first record") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCmd(t, "version")
	if code != 0 || !strings.HasPrefix(out, "kpush ") {
		t.Fatalf("exit %d: %q", code, out)
	}
}

func TestBench_RecordCountAndAsync(t *testing.T) {
	code, out, errOut := runCmd(t, "bench", "-c", "7", "-n", "500", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var res []levelResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(res) != 1 || res[0].Records != 500 || res[0].Mode != "sync" {
		t.Fatalf("-n 500: %+v", res)
	}
	code, out, errOut = runCmd(t, "bench", "-async", "-n", "3000", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	res = nil
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(res) != 1 || res[0].Records != 3000 || res[0].Mode != "async" || res[0].Failed != 0 {
		t.Fatalf("-async -n 3000: %+v", res)
	}
}
