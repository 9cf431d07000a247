package main

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestMetrics_ScrapeOverLoopback: /metrics, served on 127.0.0.1, shows the
// records sent, the failure and the requests, in the text format.
func TestMetrics_ScrapeOverLoopback(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("m", 2))
	m := newCLIMetrics(false)
	stop, addr, err := serveMetrics("127.0.0.1:0", m)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...), kpush.WithHooks(m))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	defer p.Close(ctx)
	for range 5 {
		if _, err := p.Send(ctx, &kpush.Record{Topic: "m", Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Send(ctx, &kpush.Record{Topic: "bad topic", Value: []byte("v")}); !errors.Is(err, kpush.ErrInvalidTopic) {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	text := string(body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	for _, want := range []string{
		"# TYPE kpush_producer_records_total counter\n",
		`kpush_producer_records_total{topic="m",outcome="acked",cause=""} 5` + "\n",
		`kpush_producer_records_total{topic="bad topic",outcome="not_written",cause="invalid_topic"} 1` + "\n",
		"# TYPE kpush_producer_send_duration_seconds histogram\n",
		`kpush_producer_send_duration_seconds_bucket{outcome="acked",le="+Inf"} 5` + "\n",
		`kpush_producer_send_duration_seconds_count{outcome="acked"} 5` + "\n",
		"kpush_producer_buffered_records 0\n",
		"# TYPE kpush_producer_request_duration_seconds histogram\n",
		`event="opened"}`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q; got:\n%s", want, text)
		}
	}
}

// TestMetrics_AddressInUse: a bad --metrics-addr fails the command with a
// message naming the flag.
func TestMetrics_AddressInUse(t *testing.T) {
	m := newCLIMetrics(false)
	stop, addr, err := serveMetrics("127.0.0.1:0", m)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	code, _, errOut := runCmd(t, "bench", "-c", "1", "-n", "5", "--metrics-addr", addr.String())
	if code == 0 || !strings.Contains(errOut, "--metrics-addr") {
		t.Fatalf("bench with a busy --metrics-addr: exit %d, stderr %q", code, errOut)
	}
}

// TestBench_PrintsStageBreakdown: each level's row is followed by the
// per-record stage latencies from the hooks, in the order of a record's
// path, all measured on the same records: their means add up to the
// mean of the whole (which a difference of medians would not).
func TestBench_PrintsStageBreakdown(t *testing.T) {
	code, out, errOut := runCmd(t, "bench", "-c", "4", "-n", "200")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var means []float64
	records := ""
	at := 0
	for _, want := range []string{"send → buffered", "buffered → request written", "request written → answered",
		"answered → outcome delivered", "send → outcome (the sum)"} {
		i := strings.Index(out[at:], "  "+want+"  ")
		if i < 0 {
			t.Fatalf("no stage %q after offset %d (stages out of order?) in:\n%s", want, at, out)
		}
		at += i
		line := out[at:]
		line = line[:strings.IndexByte(line, '\n')]
		f := strings.Fields(line)
		n := f[len(f)-1]
		if n == "0" || (records != "" && n != records) {
			t.Errorf("stage %q: %s records, want the same non-zero count on every row: %q", want, n, line)
		}
		records = n
		mean, err := strconv.ParseFloat(f[len(f)-4], 64)
		if err != nil || mean < 0 {
			t.Fatalf("stage %q: mean %q: %v", want, f[len(f)-4], err)
		}
		means = append(means, mean)
	}
	last := means[len(means)-1]
	sum := 0.0
	for _, m := range means[:len(means)-1] {
		sum += m
	}
	if math.Abs(sum-last) > 0.3 { // four values rounded to 0.1 µs
		t.Errorf("the stages' means add up to %.1f µs, the whole's mean is %.1f µs:\n%s", sum, last, out)
	}
	code, out, _ = runCmd(t, "bench", "-c", "1", "-n", "20", "--no-stages")
	if code != 0 || strings.Contains(out, "send → outcome") {
		t.Fatalf("--no-stages: exit %d, output:\n%s", code, out)
	}
}
