package main

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/kpush/kpush/kafkatest"
)

// TestMessages_Golden runs each command line issue 14 quoted with a
// message in Go's words, and keeps what kpush now says in
// testdata/messages.golden: flags and -X properties, never Go identifiers.
func TestMessages_Golden(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("six", 6), kafkatest.WithTopic("t", 1))
	addr := strings.Join(c.Addrs(), ",")
	times := regexp.MustCompile(`in [0-9.]+[µnm]?s \([0-9]+ records/s\)`)
	var b strings.Builder
	for _, tc := range []struct {
		stdin string
		args  []string
	}{
		{`{"value": 5}` + "\n", []string{"produce", "-b", addr, "-t", "t", "--format", "json"}},
		{`{"value": "v", "colour": "red"}` + "\n", []string{"produce", "-b", addr, "-t", "t", "--format", "json"}},
		{`{"value": "v"` + "\n", []string{"produce", "-b", addr, "-t", "t", "--format", "json"}},
		{"x\n", []string{"produce", "-b", addr, "-t", "t", "-X", "acks"}},
		{"x\n", []string{"produce", "-b", addr, "-t", "t", "-X", "sasl.password:secret"}},
		{"x\n", []string{"produce", "-b", addr, "-t", "t", "-X", "acks=1", "-X", "enable.idempotence=true"}},
		{"x\n", []string{"produce", "-b", addr, "-t", "t", "-X", "linger.ms=100", "-X", "message.timeout.ms=50"}},
		{"x\n", []string{"produce", "-b", addr, "-t", "t", "-X", "request.timeout.ms=5000", "-X", "message.timeout.ms=1000"}},
		{"x\n", []string{"produce", "-b", addr, "-t", "six", "-p", "9"}},
		{"x\n", []string{"produce", "-b", addr, "-t", "t", "-p", "x"}},
		{strings.Repeat("v", 3000) + "\n", []string{"produce", "-b", addr, "-t", "t", "-X", "batch.size=1024"}},
		{"", []string{"bench", "-b", addr, "-c", "1", "-d", "10ms"}},
		{"", []string{"bench", "-b", addr, "-c", "x"}},
		{"", []string{"produce", "-b", addr}},
		{"", []string{"frobnicate"}},
	} {
		code, stdout, stderr := runIn(t, strings.NewReader(tc.stdin), tc.args...)
		cmd := strings.ReplaceAll(strings.Join(tc.args, " "), addr, "BROKER")
		out := strings.ReplaceAll(stdout+stderr, addr, "BROKER")
		out = times.ReplaceAllString(out, "in TIME")
		fmt.Fprintf(&b, "$ kpush %s   (exit %d)\n%s\n", cmd, code, out)
		if strings.Contains(out, "Go struct") || strings.Contains(out, "AcksAll") || strings.Contains(out, "kpush: kpush:") ||
			strings.Contains(out, "(1)") || strings.Contains(out, "secret") {
			t.Errorf("kpush %s: message in Go's words or repeating a secret:\n%s", cmd, out)
		}
	}
	golden(t, "messages.golden", b.String())
}
