package main

import (
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// TestProduceFlags_KcatForms: each form a kcat user types parses as kcat
// (getopt) parses it, and the Go flag forms keep working.
func TestProduceFlags_KcatForms(t *testing.T) {
	type want struct {
		brokers   []string
		topic     string
		keyDelim  string
		partition int32
		files     []string
		count     int64
		tee       bool
		quiet     bool
		failedOut string
		json      bool
	}
	base := want{brokers: []string{"127.0.0.1:9092"}, topic: "t", partition: -1}
	with := func(f func(*want)) want { w := base; f(&w); return w }
	for _, tc := range []struct {
		name string
		args []string
		want want
	}{
		{"separate arguments", []string{"-b", "127.0.0.1:9092", "-t", "t"}, base},
		{"attached -b and -t", []string{"-b127.0.0.1:9092", "-tt"}, base},
		{"attached -K:", []string{"-b127.0.0.1:9092", "-t", "t", "-K:"}, with(func(w *want) { w.keyDelim = ":" })},
		{"-K with tab escape", []string{"-b", "127.0.0.1:9092", "-t", "t", "-K", `\t`}, with(func(w *want) { w.keyDelim = "\t" })},
		{"-K= is the = delimiter", []string{"-b", "127.0.0.1:9092", "-t", "t", "-K="}, with(func(w *want) { w.keyDelim = "=" })},
		{"Go style -t=topic", []string{"-b=127.0.0.1:9092", "-t=t"}, base},
		{"-P first", []string{"-P", "-b", "127.0.0.1:9092", "-t", "t"}, base},
		{"clustered booleans", []string{"-PqT", "-b", "127.0.0.1:9092", "-t", "t"}, with(func(w *want) { w.quiet, w.tee = true, true })},
		{"cluster ending in an option with its argument", []string{"-qtt", "-b", "127.0.0.1:9092"}, with(func(w *want) { w.quiet = true })},
		{"flags after files", []string{"a.txt", "-b", "127.0.0.1:9092", "b.txt", "-t", "t"}, with(func(w *want) { w.files = []string{"a.txt", "b.txt"} })},
		{"- is stdin, an operand", []string{"-b", "127.0.0.1:9092", "-t", "t", "-"}, with(func(w *want) { w.files = []string{"-"} })},
		{"-- ends the flags", []string{"-b", "127.0.0.1:9092", "-t", "t", "--", "-q"}, with(func(w *want) { w.files = []string{"-q"} })},
		{"-l accepted", []string{"-l", "-b", "127.0.0.1:9092", "-t", "t", "f"}, with(func(w *want) { w.files = []string{"f"} })},
		{"-c N", []string{"-b", "127.0.0.1:9092", "-t", "t", "-c", "10"}, with(func(w *want) { w.count = 10 })},
		{"-c attached", []string{"-b", "127.0.0.1:9092", "-t", "t", "-c10"}, with(func(w *want) { w.count = 10 })},
		{"-p -1 takes the next word", []string{"-b", "127.0.0.1:9092", "-t", "t", "-p", "-1"}, base},
		{"-p3", []string{"-b", "127.0.0.1:9092", "-t", "t", "-p3"}, with(func(w *want) { w.partition = 3 })},
		{"long GNU", []string{"--brokers", "127.0.0.1:9092", "--topic=t", "--failed-out", "f.jsonl"}, with(func(w *want) { w.failedOut = "f.jsonl" })},
		{"long Go single dash", []string{"-b", "127.0.0.1:9092", "-t", "t", "-failed-out=f.jsonl", "-format", "json"}, with(func(w *want) { w.failedOut, w.json = "f.jsonl", true })},
		{"-topic is -t opic, as getopt", []string{"-b", "127.0.0.1:9092", "-topic"}, with(func(w *want) { w.topic = "opic" })},
		{"comma-separated brokers", []string{"-b", "a:1, b:2", "-t", "t"}, with(func(w *want) { w.brokers = []string{"a:1", "b:2"} })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseProduceFlags(tc.args, io.Discard)
			if err != nil {
				t.Fatalf("parse %q: %v", tc.args, err)
			}
			got := want{brokers: cfg.brokers, topic: cfg.topic, keyDelim: string(cfg.keyDelim), partition: cfg.partition,
				files: cfg.files, count: cfg.count, tee: cfg.tee, quiet: cfg.quiet, failedOut: cfg.failedOut, json: cfg.json}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("parse %q:\n got %+v\nwant %+v", tc.args, got, tc.want)
			}
		})
	}
}

// TestProduceFlags_UsageErrorsAreOneLine: a bad command line gets one
// line naming the problem and pointing at -h, never the whole help.
func TestProduceFlags_UsageErrorsAreOneLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-t", "t"}, "kpush produce: -b is required (e.g. -b localhost:9092); see 'kpush produce -h'\n"},
		{[]string{"-b", "a:1", "-t"}, "kpush produce: -t needs an argument (TOPIC); see 'kpush produce -h'\n"},
		{[]string{"-b", "a:1", "-t", "t", "-C"}, "kpush produce: kcat's -C is not supported: kpush only produces; consume with kcat -C or kafka-console-consumer; see 'kpush produce -h'\n"},
		{[]string{"-b", "a:1", "-t", "t", "-y"}, "kpush produce: unknown option -y; see 'kpush produce -h'\n"},
		{[]string{"-b", "a:1", "-t", "t", "--nope"}, "kpush produce: unknown option --nope; see 'kpush produce -h'\n"},
		{[]string{"-b", "a:1", "-t", "t", "-c", "x"}, "kpush produce: -c: \"x\" is not a record count (1 or more); see 'kpush produce -h'\n"},
	} {
		var b strings.Builder
		_, err := parseProduceFlags(tc.args, &b)
		if !errors.Is(err, errUsage) {
			t.Errorf("%q: err = %v, want a usage error", tc.args, err)
		}
		if b.String() != tc.want {
			t.Errorf("%q:\n got %q\nwant %q", tc.args, b.String(), tc.want)
		}
	}
}

// TestRun_KcatModeFirst: "kpush -P ..." produces and "kpush -L" lists
// metadata; a consume mode is refused with advice.
func TestRun_KcatModeFirst(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-P", "-t", "t"}, "kpush produce: -b is required"},
		{[]string{"-L"}, "kpush metadata: -b is required"},
		{[]string{"-C", "-b", "a:1"}, "kcat's -C is not supported: kpush only produces"},
		{[]string{"-b", "a:1"}, "start with a command"},
	} {
		code, _, errOut := runCmd(t, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%q: exit %d, stderr %q, want exit 2 and one line with %q", tc.args, code, errOut, tc.want)
		}
	}
}

// TestUsageErrors_OneLineEveryCommand: every subcommand reports a bad
// command line in one line pointing at its -h, never the whole help.
func TestUsageErrors_OneLineEveryCommand(t *testing.T) {
	for _, args := range [][]string{
		{"dev", "-nope"}, {"dev", "-brokers", "0"}, {"dev", "--port"},
		{"bench", "-nope"}, {"bench", "-c", "0"}, {"bench", "extra"},
		{"produce", "-nope"}, {"produce", "-b", "a:1"},
		{"metadata", "-nope"}, {"metadata"},
	} {
		code, stdout, stderr := runCmd(t, args...)
		want := "; see 'kpush " + args[0] + " -h'\n"
		if code != 2 || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, want) ||
			!strings.HasPrefix(stderr, "kpush "+args[0]+": ") {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and one line ending in %q", args, code, stderr, want)
		}
	}
}

// FuzzProduceFlags: any command line parses or gives a one-line usage
// error; it never panics.
func FuzzProduceFlags(f *testing.F) {
	for _, s := range []string{"-b\x00a:1\x00-tt\x00-K:", "-Pq\x00--topic=t\x00-b=a:1\x00f\x00-c3", "--\x00-x", "-X\x00acks", "-K="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var b strings.Builder
		_, err := parseProduceFlags(strings.Split(s, "\x00"), &b)
		if err != nil && !errors.Is(err, errHelp) && strings.Count(b.String(), "\n") != 1 {
			t.Fatalf("%q: error %v printed %q", s, err, b.String())
		}
	})
}
