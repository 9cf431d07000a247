package realtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestMain stops the shared broker after the tests (Pdeathsig kills it if
// the binary dies first).
func TestMain(m *testing.M) {
	code := m.Run()
	if err := kafkatest.CloseShared(); err != nil {
		fmt.Fprintln(os.Stderr, "realtest: closing the shared cluster:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// topicSeq makes topic names unique within a run; the run's start time
// makes them unique across runs on a long-lived KPUSH_KAFKA_SEEDS cluster.
var (
	topicSeq atomic.Int64
	runID    = time.Now().UnixNano() % 1e9
)

// cluster returns the shared one-node cluster (or KPUSH_KAFKA_SEEDS).
func cluster(t *testing.T) *kafkatest.RealCluster {
	t.Helper()
	return kafkatest.SharedRealCluster(t)
}

// newTopic creates a fresh topic for the test and returns its name.
func newTopic(t *testing.T, c *kafkatest.RealCluster, partitions int32) string {
	t.Helper()
	return newTopicConfig(t, c, partitions, nil)
}

// newTopicConfig is newTopic with topic configs.
func newTopicConfig(t *testing.T, c *kafkatest.RealCluster, partitions int32, configs map[string]string) string {
	t.Helper()
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, fmt.Sprintf("kpush-%s-%d-%d", t.Name(), runID, topicSeq.Add(1)))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := c.CreateTopicWithConfig(ctx, name, partitions, configs); err != nil {
		t.Fatal(err)
	}
	return name
}

// newProducer returns a producer for c, closed when the test ends.
func newProducer(t *testing.T, c *kafkatest.RealCluster, opts ...kpush.Option) *kpush.Producer {
	t.Helper()
	p, err := kpush.New(append([]kpush.Option{kpush.WithBrokers(c.Addrs()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil && !errors.Is(err, kpush.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// readAll reads topic back, bounded by a minute.
func readAll(t *testing.T, c *kafkatest.RealCluster, topic string) []kafkatest.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	recs, err := c.ReadAll(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// sent is a record produced and the result the producer returned.
type sent struct {
	rec *kpush.Record
	res kpush.Result
}

// checkReadBack checks that the records read back are exactly the records
// sent, at the partitions and offsets their Results named, with the same
// key, value (nil stays nil), headers and timestamp (ms).
func checkReadBack(t *testing.T, got []kafkatest.Record, want []sent) {
	t.Helper()
	type at struct {
		p int32
		o int64
	}
	byPos := make(map[at]kafkatest.Record, len(got))
	for _, r := range got {
		byPos[at{r.Partition, r.Offset}] = r
	}
	if len(got) != len(want) {
		t.Errorf("read %d records, sent %d", len(got), len(want))
	}
	bad := 0
	for i, s := range want {
		r, ok := byPos[at{s.res.Partition, s.res.Offset}]
		var why string
		switch {
		case !ok:
			why = "no record at the Result's partition/offset"
		case !sameBytes(r.Key, s.rec.Key):
			why = fmt.Sprintf("key %q, want %q", r.Key, s.rec.Key)
		case !sameBytes(r.Value, s.rec.Value):
			why = fmt.Sprintf("value %q, want %q", r.Value, s.rec.Value)
		case !sameHeaders(r.Headers, s.rec.Headers):
			why = fmt.Sprintf("headers %v, want %v", r.Headers, s.rec.Headers)
		case r.Timestamp.UnixMilli() != s.res.Timestamp.UnixMilli():
			why = fmt.Sprintf("timestamp %v, Result says %v", r.Timestamp, s.res.Timestamp)
		case !s.rec.Timestamp.IsZero() && r.Timestamp.UnixMilli() != s.rec.Timestamp.UnixMilli():
			why = fmt.Sprintf("timestamp %v, record had %v", r.Timestamp, s.rec.Timestamp)
		}
		if why != "" {
			bad++
			if bad <= 10 {
				t.Errorf("record %d (partition %d offset %d): %s", i, s.res.Partition, s.res.Offset, why)
			}
		}
	}
	if bad > 10 {
		t.Errorf("... %d bad records in all", bad)
	}
}

// sameBytes is bytes.Equal that tells nil from empty.
func sameBytes(a, b []byte) bool {
	return (a == nil) == (b == nil) && string(a) == string(b)
}

func sameHeaders(got []kafkatest.Header, want []kpush.Header) bool {
	return slices.EqualFunc(got, want, func(g kafkatest.Header, w kpush.Header) bool {
		return g.Key == w.Key && sameBytes(g.Value, w.Value)
	})
}
