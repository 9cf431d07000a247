package realtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kpush/kpush"
	"github.com/twmb/franz-go/pkg/kerr"
)

// records returns n varied records for topic: keyed and keyless, headers
// (including duplicate keys and a nil value), explicit and zero timestamps,
// values large enough to compress.
func records(topic string, n int) []*kpush.Record {
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	recs := make([]*kpush.Record, n)
	for i := range recs {
		r := &kpush.Record{
			Topic: topic,
			Value: fmt.Appendf(nil, "value-%d-%0100d", i, i),
		}
		if i%3 != 0 {
			r.Key = fmt.Appendf(nil, "key-%d", i%17)
		}
		if i%2 == 0 {
			r.Headers = []kpush.Header{{Key: "h", Value: []byte("1")}, {Key: "h", Value: []byte("2")}, {Key: "nil", Value: nil}}
		}
		if i%4 == 0 {
			r.Timestamp = base.Add(time.Duration(i) * time.Millisecond)
		}
		recs[i] = r
	}
	return recs
}

// sendAll sends recs with SendAsync, flushes, and returns each with its
// Result; any error fails the test.
func sendAll(t *testing.T, p *kpush.Producer, recs []*kpush.Record) []sent {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out := make([]sent, len(recs))
	errs := make([]error, len(recs))
	for i, r := range recs {
		out[i].rec = r
		p.SendAsync(ctx, r, func(res kpush.Result, err error) {
			out[i].res, errs[i] = res, err
		})
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	return out
}

// TestRoundTrip_Codecs produces with each codec, reads back with franz-go,
// and checks every record at the offset its Result named.
func TestRoundTrip_Codecs(t *testing.T) {
	c := cluster(t)
	for _, codec := range []kpush.Compression{kpush.NoCompression, kpush.Gzip, kpush.Snappy, kpush.LZ4, kpush.Zstd} {
		t.Run(codec.String(), func(t *testing.T) {
			topic := newTopic(t, c, 3)
			p := newProducer(t, c, kpush.WithCompression(codec), kpush.WithLinger(5*time.Millisecond))
			want := sendAll(t, p, records(topic, 500))
			checkReadBack(t, readAll(t, c, topic), want)
		})
	}
}

// TestRoundTrip_Acks checks acks=1 and acks=all (idempotent: the broker
// stores a producer ID) with results equal to the log, and acks=0, whose
// records arrive without offsets.
func TestRoundTrip_Acks(t *testing.T) {
	c := cluster(t)
	t.Run("all", func(t *testing.T) {
		topic := newTopic(t, c, 2)
		p := newProducer(t, c, kpush.WithAcks(kpush.AcksAll))
		want := sendAll(t, p, records(topic, 100))
		got := readAll(t, c, topic)
		checkReadBack(t, got, want)
		for _, r := range got {
			if r.ProducerID < 0 {
				t.Fatalf("record at %d/%d has no producer ID: idempotence is off", r.Partition, r.Offset)
			}
		}
	})
	t.Run("leader", func(t *testing.T) {
		topic := newTopic(t, c, 2)
		p := newProducer(t, c, kpush.WithAcks(kpush.AcksLeader), kpush.WithIdempotence(false))
		want := sendAll(t, p, records(topic, 100))
		checkReadBack(t, readAll(t, c, topic), want)
	})
	t.Run("none", func(t *testing.T) {
		topic := newTopic(t, c, 1)
		p := newProducer(t, c, kpush.WithAcks(kpush.AcksNone), kpush.WithIdempotence(false))
		sendAll(t, p, records(topic, 100))
		// acks=0 has no answer to wait for; Close writes what is buffered
		// and ReadAll reads to the high watermark, which may still lag.
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Fatal(err)
		}
		got := readAll(t, c, topic)
		for len(got) < 100 && ctx.Err() == nil {
			got = readAll(t, c, topic)
		}
		if len(got) != 100 {
			t.Fatalf("read %d records, want 100", len(got))
		}
	})
}

// TestRoundTrip_NullsAndEmpties keeps nil and empty keys, values and header
// values apart.
func TestRoundTrip_NullsAndEmpties(t *testing.T) {
	c := cluster(t)
	topic := newTopic(t, c, 1)
	p := newProducer(t, c)
	recs := []*kpush.Record{
		{Topic: topic},
		{Topic: topic, Key: []byte{}, Value: []byte{}},
		{Topic: topic, Key: []byte("k"), Value: nil},
		{Topic: topic, Key: nil, Value: []byte("v"), Headers: []kpush.Header{{Key: "", Value: []byte{}}, {Key: "n", Value: nil}}},
	}
	want := sendAll(t, p, recs)
	checkReadBack(t, readAll(t, c, topic), want)
}

// TestRoundTrip_Timestamps checks explicit create times (old, and within
// the hour ahead the topic allows), that a zero timestamp becomes the time
// of Send, and that a timestamp beyond message.timestamp.after.max.ms
// (KIP-937; the fake cluster accepts anything) fails as not written with the
// broker's INVALID_TIMESTAMP.
func TestRoundTrip_Timestamps(t *testing.T) {
	c := cluster(t)
	topic := newTopicConfig(t, c, 1, map[string]string{"message.timestamp.after.max.ms": "3600000"})
	p := newProducer(t, c)
	before := time.Now().Add(-time.Second)
	recs := []*kpush.Record{
		{Topic: topic, Value: []byte("2001"), Timestamp: time.Date(2001, 9, 9, 1, 46, 40, 0, time.UTC)},
		{Topic: topic, Value: []byte("epoch+1ms"), Timestamp: time.UnixMilli(1)},
		{Topic: topic, Value: []byte("now")},
		{Topic: topic, Value: []byte("in 10 minutes"), Timestamp: time.Now().Add(10 * time.Minute)},
	}
	got := sendAll(t, p, recs)
	checkReadBack(t, readAll(t, c, topic), got)
	if ts := got[2].res.Timestamp; ts.Before(before) || ts.After(time.Now().Add(time.Second)) {
		t.Fatalf("zero timestamp became %v, want about now", ts)
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err := p.Send(ctx, &kpush.Record{Topic: topic, Value: []byte("2100"), Timestamp: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)})
	if !errors.Is(err, kerr.InvalidTimestamp) || !errors.Is(err, kpush.ErrNotWritten) {
		t.Fatalf("Send with a timestamp in 2100: %v, want INVALID_TIMESTAMP, not written", err)
	}
	if n := len(readAll(t, c, topic)); n != len(recs) {
		t.Fatalf("read %d records, want %d: the rejected one was written", n, len(recs))
	}
}

// TestRoundTrip_ManyGoroutines: 10,000 goroutines each send 3 records with
// Send, keyed by goroutine; every record is in the log exactly once, at its
// Result's offset, and each goroutine's records are in order.
func TestRoundTrip_ManyGoroutines(t *testing.T) {
	const goroutines, each = 10_000, 3
	c := cluster(t)
	topic := newTopic(t, c, 6)
	p := newProducer(t, c)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	all := make([]sent, goroutines*each)
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				r := &kpush.Record{Topic: topic, Key: fmt.Appendf(nil, "g%d", g), Value: fmt.Appendf(nil, "g%d-%d", g, i)}
				res, err := p.Send(ctx, r)
				if err != nil {
					select {
					case errc <- fmt.Errorf("goroutine %d record %d: %w", g, i, err):
					default:
					}
					return
				}
				all[g*each+i] = sent{rec: r, res: res}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	got := readAll(t, c, topic)
	checkReadBack(t, got, all)
	for g := range goroutines {
		for i := 1; i < each; i++ {
			a, b := all[g*each+i-1].res, all[g*each+i].res
			if a.Partition != b.Partition || a.Offset >= b.Offset {
				t.Fatalf("goroutine %d: record %d at %d/%d, record %d at %d/%d: out of order", g, i-1, a.Partition, a.Offset, i, b.Partition, b.Offset)
			}
		}
	}
}

// TestFlushAndClose: Flush returns after every callback has run; Close
// leaves nothing undelivered; Send after Close fails with ErrClosed.
func TestFlushAndClose(t *testing.T) {
	c := cluster(t)
	topic := newTopic(t, c, 3)
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	done := 0
	for i := range 2000 {
		p.SendAsync(ctx, &kpush.Record{Topic: topic, Value: fmt.Appendf(nil, "%d", i)}, func(_ kpush.Result, err error) {
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			done++
			mu.Unlock()
		})
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if done != 2000 {
		t.Errorf("Flush returned with %d of 2000 callbacks run", done)
	}
	mu.Unlock()
	for i := range 500 {
		p.SendAsync(ctx, &kpush.Record{Topic: topic, Value: fmt.Appendf(nil, "late-%d", i)}, nil)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Send(ctx, &kpush.Record{Topic: topic, Value: []byte("x")}); !errors.Is(err, kpush.ErrClosed) {
		t.Fatalf("Send after Close: %v, want ErrClosed", err)
	}
	if got := readAll(t, c, topic); len(got) != 2500 {
		t.Fatalf("read %d records, want 2500", len(got))
	}
}

// TestUnknownTopic: a real broker with auto-creation off answers
// UNKNOWN_TOPIC_OR_PARTITION; the record fails as not written.
func TestUnknownTopic(t *testing.T) {
	c := cluster(t)
	p := newProducer(t, c)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err := p.Send(ctx, &kpush.Record{Topic: fmt.Sprintf("kpush-missing-%d", runID), Value: []byte("x")})
	if !errors.Is(err, kpush.ErrUnknownTopic) || !errors.Is(err, kpush.ErrNotWritten) {
		t.Fatalf("Send to a missing topic: %v, want ErrUnknownTopic and ErrNotWritten", err)
	}
}
