package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestProgressLine_StdinFileAndStalled: from stdin the line counts records
// and bytes, from files it adds read and acknowledged fractions and the
// time left; a stall replaces the time left with STALLED, and the stall's
// own text names the broker, since when, how many wait and when they fail.
func TestProgressLine_StdinFileAndStalled(t *testing.T) {
	tl := &tally{groups: map[string]*reasonGroup{}}
	s := &sender{tally: tl, watch: &watch{}}
	s.read.Store(3 << 20)
	s.handed.Store(3000)
	tl.sent.Store(1000)
	tl.ackedBytes.Store(1 << 20)
	tl.fail(&item{name: "stdin", line: 1}, errors.New("x"))

	if got, want := progressLine(s, -1, 2*time.Second), "read 3000 (3.0 MiB) 1000 acked 1 failed 500/s"; got != want {
		t.Errorf("stdin:\n got %q\nwant %q", got, want)
	}
	got := progressLine(s, 4<<20, 2*time.Second)
	if want := "[#####----------.....] read 75% acked 25% 1000 acked 1 failed 500/s 6s left"; got != want {
		t.Errorf("files:\n got %q\nwant %q", got, want)
	}

	since := time.Date(2026, 12, 1, 20, 31, 5, 0, time.Local)
	st := &stall{since: since, down: []string{"127.0.0.1:9092"}, allDown: true, waiting: 2000, failFrom: since.Add(30 * time.Second)}
	s.watch.state.Store(st)
	if got := progressLine(s, 4<<20, 2*time.Second); !strings.Contains(got, " 500/s STALLED ") || strings.Contains(got, "left") {
		t.Errorf("stalled: %q", got)
	}
	want := "waiting for broker 127.0.0.1:9092: unreachable, nothing acknowledged since 20:31:05 (3s ago); 2000 records wait, failing from 20:31:35 (message.timeout.ms)"
	if got := st.text(since.Add(3 * time.Second)); got != want {
		t.Errorf("stall text:\n got %q\nwant %q", got, want)
	}
	st.down = nil
	if got := st.text(since.Add(3 * time.Second)); !strings.Contains(got, "brokers accept connections; 2000 records wait") {
		t.Errorf("silent brokers: %q", got)
	}
}
