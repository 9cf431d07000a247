package main

import (
	"context"
	"errors"
	"io"
	"net/http"
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
// per-stage latencies from the hooks, with samples.
func TestBench_PrintsStageBreakdown(t *testing.T) {
	code, out, errOut := runCmd(t, "bench", "-c", "1", "-n", "50")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"send → buffered (per record)", "request written → answered (per request)", "send → outcome (per record)"} {
		i := strings.Index(out, want)
		if i < 0 {
			t.Fatalf("no %q in:\n%s", want, out)
		}
		line := out[i:]
		line = line[:strings.IndexByte(line, '\n')]
		if f := strings.Fields(line); f[len(f)-1] == "0" {
			t.Errorf("stage %q has no samples: %q", want, line)
		}
	}
	code, out, _ = runCmd(t, "bench", "-c", "1", "-n", "20", "--no-stages")
	if code != 0 || strings.Contains(out, "send → outcome") {
		t.Fatalf("--no-stages: exit %d, output:\n%s", code, out)
	}
}
