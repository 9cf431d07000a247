package kpush_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

func newProducer(tb testing.TB, c *kafkatest.Cluster, opts ...kpush.Option) *kpush.Producer {
	tb.Helper()
	p, err := kpush.New(append([]kpush.Option{kpush.WithBrokers(c.Addrs()...)}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil && !errors.Is(err, kpush.ErrClosed) {
			tb.Errorf("Close: %v", err)
		}
	})
	return p
}

func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// TestSend_RoundTrip produces keyed, keyless and headered records with every
// codec and reads them back byte for byte, checking offsets against Results.
func TestSend_RoundTrip(t *testing.T) {
	for _, codec := range []kpush.Compression{kpush.NoCompression, kpush.Gzip, kpush.Snappy, kpush.LZ4, kpush.Zstd} {
		t.Run(codec.String(), func(t *testing.T) {
			c := kafkatest.NewTestCluster(t, kafkatest.WithBrokers(3), kafkatest.WithTopic("rt", 6))
			p := newProducer(t, c, kpush.WithCompression(codec))
			ctx := testCtx(t)

			const n = 300
			want := make(map[string]kpush.Record, n)
			results := make(map[string]kpush.Result, n)
			var mu sync.Mutex
			var wg sync.WaitGroup
			for i := range n {
				rec := &kpush.Record{
					Topic: "rt",
					Value: bytes.Repeat([]byte{byte(i)}, i%200),
					Headers: []kpush.Header{
						{Key: "id", Value: []byte(strconv.Itoa(i))},
						{Key: "nil", Value: nil},
					},
					Timestamp: time.UnixMilli(1_700_000_000_000 + int64(i)),
				}
				if i%3 != 0 {
					rec.Key = []byte("key-" + strconv.Itoa(i%17))
				}
				want[strconv.Itoa(i)] = *rec
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := p.Send(ctx, rec)
					if err != nil {
						t.Errorf("Send %d: %v", i, err)
						return
					}
					mu.Lock()
					results[strconv.Itoa(i)] = res
					mu.Unlock()
				}()
			}
			wg.Wait()

			got, err := c.ReadAll(ctx, "rt")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != n {
				t.Fatalf("read %d records, want %d", len(got), n)
			}
			for _, g := range got {
				if len(g.Headers) != 2 || g.Headers[0].Key != "id" {
					t.Fatalf("headers %+v", g.Headers)
				}
				id := string(g.Headers[0].Value)
				w, res := want[id], results[id]
				if !bytes.Equal(g.Value, w.Value) || !bytes.Equal(g.Key, w.Key) || (g.Key == nil) != (w.Key == nil) {
					t.Errorf("record %s: key %q value len %d, want key %q len %d", id, g.Key, len(g.Value), w.Key, len(w.Value))
				}
				if g.Headers[1].Key != "nil" || g.Headers[1].Value != nil {
					t.Errorf("record %s: nil header came back as %+v", id, g.Headers[1])
				}
				if g.Partition != res.Partition || g.Offset != res.Offset {
					t.Errorf("record %s at %d/%d, Result said %d/%d", id, g.Partition, g.Offset, res.Partition, res.Offset)
				}
				if !g.Timestamp.Equal(w.Timestamp) {
					t.Errorf("record %s timestamp %v, want %v", id, g.Timestamp, w.Timestamp)
				}
			}
		})
	}
}

// TestSend_KeyedPartitionsMatchJava checks that keyed records land where the
// Java client would put them (murmur2).
func TestSend_KeyedPartitionsMatchJava(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("k", 10))
	p := newProducer(t, c)
	ctx := testCtx(t)
	// Partitions for 10 partitions, from Kafka's murmur2 (toPositive(murmur2(key)) % 10).
	for _, key := range []string{"21", "foobar", "a-little-bit-long-string", "a-little-bit-longer-string"} {
		res, err := p.Send(ctx, &kpush.Record{Topic: "k", Key: []byte(key)})
		if err != nil {
			t.Fatal(err)
		}
		want := javaPartition(key, 10)
		if res.Partition != want {
			t.Errorf("key %q went to %d, Java puts it in %d", key, res.Partition, want)
		}
	}
}

// javaPartition uses the murmur2 values from Kafka's UtilsTest.
func javaPartition(key string, n int32) int32 {
	m := map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
	}
	return (m[key] & 0x7fffffff) % n
}

// TestSend_ManyGoroutinesExactlyOnceInOrder runs 10,000 goroutines, each
// sending records for its own key in sequence, and checks every record is
// present exactly once and in send order per key.
func TestSend_ManyGoroutinesExactlyOnceInOrder(t *testing.T) {
	goroutines, perG := 10000, 3
	if testing.Short() {
		goroutines = 2000
	}
	c := kafkatest.NewTestCluster(t, kafkatest.WithBrokers(3), kafkatest.WithTopic("many", 12))
	p := newProducer(t, c)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := []byte("g" + strconv.Itoa(g))
			for i := range perG {
				_, err := p.Send(ctx, &kpush.Record{Topic: "many", Key: key, Value: []byte(strconv.Itoa(i))})
				if err != nil {
					t.Errorf("goroutine %d record %d: %v", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got, err := c.ReadAll(ctx, "many")
	if err != nil {
		t.Fatal(err)
	}
	next := make(map[string]int, goroutines)
	for _, r := range got {
		k := string(r.Key)
		if want := strconv.Itoa(next[k]); string(r.Value) != want {
			t.Fatalf("key %s: got record %s, want %s (duplicate or reordered)", k, r.Value, want)
		}
		next[k]++
	}
	if len(got) != goroutines*perG {
		t.Fatalf("read %d records, want %d", len(got), goroutines*perG)
	}
	st := p.Stats()
	if st.RecordsSent != int64(goroutines*perG) || st.RecordsBuffered != 0 {
		t.Errorf("stats: %+v", st)
	}
	t.Logf("batches %d, avg %.1f records/batch, requests %d", st.Batches, st.AvgBatchRecords, st.Requests)
}

// TestSendAsync_CallbacksExactlyOnceInOrder pipelines records from one
// goroutine and checks each callback runs once, in order per partition.
func TestSendAsync_CallbacksExactlyOnceInOrder(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithBrokers(2), kafkatest.WithTopic("async", 4))
	p := newProducer(t, c, kpush.WithMaxBufferedRecords(1000))
	ctx := testCtx(t)
	const n = 20000
	var mu sync.Mutex
	calls := make([]int, n)
	lastOffset := map[int32]int64{}
	for i := range n {
		p.SendAsync(ctx, &kpush.Record{Topic: "async", Key: []byte{byte(i % 8)}, Value: []byte(strconv.Itoa(i))}, func(res kpush.Result, err error) {
			mu.Lock()
			defer mu.Unlock()
			calls[i]++
			if err != nil {
				t.Errorf("record %d: %v", i, err)
				return
			}
			if last, ok := lastOffset[res.Partition]; ok && res.Offset != last+1 {
				t.Errorf("partition %d: offset %d after %d", res.Partition, res.Offset, last)
			}
			lastOffset[res.Partition] = res.Offset
		})
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, k := range calls {
		if k != 1 {
			t.Fatalf("record %d: callback ran %d times", i, k)
		}
	}
}

// TestSend_Linger checks that a lingering partition still sends.
func TestSend_Linger(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("linger", 1))
	p := newProducer(t, c, kpush.WithLinger(20*time.Millisecond))
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Send(ctx, &kpush.Record{Topic: "linger", Value: []byte{byte(i)}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if st := p.Stats(); st.RecordsSent != 50 {
		t.Fatalf("sent %d", st.RecordsSent)
	}
}

// TestSend_AcksModes checks acks=1 and acks=0 (no response, offset -1).
func TestSend_AcksModes(t *testing.T) {
	for _, tc := range []struct {
		name string
		acks kpush.Acks
	}{{"leader", kpush.AcksLeader}, {"none", kpush.AcksNone}} {
		t.Run(tc.name, func(t *testing.T) {
			c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("acks", 2))
			p := newProducer(t, c, kpush.WithAcks(tc.acks))
			ctx := testCtx(t)
			for i := range 100 {
				res, err := p.Send(ctx, &kpush.Record{Topic: "acks", Value: []byte(fmt.Sprint(i))})
				if err != nil {
					t.Fatal(err)
				}
				if tc.acks == kpush.AcksNone && res.Offset != -1 {
					t.Fatalf("acks=0 offset %d, want -1", res.Offset)
				}
			}
			if err := p.Close(ctx); err != nil {
				t.Fatal(err)
			}
			// acks=0 has no acknowledgement; the records still arrive.
			deadline := time.Now().Add(10 * time.Second)
			for {
				got, err := c.ReadAll(ctx, "acks")
				if err != nil {
					t.Fatal(err)
				}
				if len(got) == 100 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("read %d records, want 100", len(got))
				}
				select {
				case <-time.After(50 * time.Millisecond):
				case <-ctx.Done():
					t.Fatal(ctx.Err())
				}
			}
		})
	}
}
