package kpush_test

import (
	"bytes"
	"context"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestInterop_KcatConsumesEveryCodec produces with kpush and consumes with
// kcat (librdkafka), which decompresses kpush's batches exactly as sent:
// proof that a real client reads our gzip, snappy, lz4 and zstd batches.
func TestInterop_KcatConsumesEveryCodec(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not installed; .ci/run installs it (apt-get install kcat)")
	}
	for _, codec := range []kpush.Compression{kpush.NoCompression, kpush.Gzip, kpush.Snappy, kpush.LZ4, kpush.Zstd} {
		t.Run(codec.String(), func(t *testing.T) {
			c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("interop", 2))
			p := newProducer(t, c, kpush.WithCompression(codec))
			ctx := testCtx(t)
			var want []string
			done := make(chan error, 200)
			for i := range 200 {
				key, value := "k"+strconv.Itoa(i%7), strings.Repeat("v", i%50)+strconv.Itoa(i)
				want = append(want, key+"="+value+"|h="+strconv.Itoa(i))
				p.SendAsync(ctx, &kpush.Record{Topic: "interop", Key: []byte(key), Value: []byte(value),
					Headers: []kpush.Header{{Key: "h", Value: []byte(strconv.Itoa(i))}}}, func(_ kpush.Result, err error) { done <- err })
			}
			for range 200 {
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(cctx, kcat, "-C", "-b", strings.Join(c.Addrs(), ","), "-t", "interop",
				"-o", "beginning", "-e", "-q", "-f", "%k=%s|%h\n", "-X", "broker.version.fallback=2.8.0")
			var out, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("kcat: %v\n%s", err, stderr.String())
			}
			got := strings.Split(strings.TrimSpace(out.String()), "\n")
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("kcat read %d records, want %d; first got %q want %q\nstderr: %s", len(got), len(want), got[0], want[0], stderr.String())
			}
		})
	}
}
