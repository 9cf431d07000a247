package kpush

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestREADMEDefaults keeps the README's options table equal to
// defaultConfig.
func TestREADMEDefaults(t *testing.T) {
	c := defaultConfig()
	want := map[string]string{
		"WithBrokers":            "none (required)",
		"WithClientID":           fmt.Sprintf("%q", c.clientID),
		"WithAcks":               map[Acks]string{AcksAll: "AcksAll", AcksLeader: "AcksLeader", AcksNone: "AcksNone"}[c.acks],
		"WithIdempotence":        fmt.Sprint(c.idempotent),
		"WithMaxInflight":        fmt.Sprint(c.maxInflight),
		"WithMaxBatchBytes":      fmtBytes(int64(c.maxBatchBytes)),
		"WithMaxRequestBytes":    fmtBytes(int64(c.maxRequestBytes)),
		"WithLinger":             fmtDur(c.linger),
		"WithCoalesceBytes":      fmtBytes(int64(c.coalesceBytes)),
		"WithMaxBufferedBytes":   fmtBytes(c.maxBufBytes),
		"WithMaxBufferedRecords": fmt.Sprint(c.maxBufRecords),
		"WithFailFastWhenFull":   fmt.Sprint(c.failFast),
		"WithDeliveryTimeout":    fmtDur(c.deliveryTimeout),
		"WithRequestTimeout":     fmtDur(c.requestTimeout),
		"WithRetryBackoff":       fmtDur(c.retryBackoff),
		"WithDialTimeout":        fmtDur(c.dialTimeout),
		"WithConnMaxIdle":        fmtDur(c.connMaxIdle),
		"WithCompression":        map[Compression]string{NoCompression: "NoCompression"}[c.compression],
		"WithPartitioner":        map[Partitioner]string{StickyPartitioner: "StickyPartitioner"}[c.partitioner],
		"WithDefaultTopic":       fmt.Sprintf("%q", c.defaultTopic),
		"WithLogger":             map[bool]string{true: "no logging"}[c.logger == nil],
		"WithMetadataMaxAge":     fmtDur(c.metadataMaxAge),
		"WithTLS":                map[bool]string{true: "off"}[c.tls == nil],
		"WithSASL":               map[bool]string{true: "none"}[c.sasl == nil],
		"WithHooks":              map[bool]string{true: "none"}[len(c.hooks) == 0],
	}
	f, err := os.Open("README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "| `With") {
			continue
		}
		cells := strings.Split(line, "|")
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		def := strings.Trim(strings.TrimSpace(cells[2]), "`")
		w, ok := want[name]
		if !ok {
			t.Errorf("README lists %s, which this test does not know", name)
			continue
		}
		if def != w {
			t.Errorf("README says %s defaults to %q; the code says %q", name, def, w)
		}
		seen[name] = true
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("README options table lacks %s", name)
		}
	}
}

func fmtBytes(n int64) string {
	switch {
	case n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprint(n)
}

func fmtDur(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	return s
}
