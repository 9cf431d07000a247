package batch

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// newBroker starts a one-broker fake cluster with topic "t" (one partition)
// and returns it with a client pinned to Produce v9.
func newBroker(t *testing.T) (*kfake.Cluster, *kgo.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	versions := kversion.Stable()
	versions.SetMaxKeyVersion(int16(kmsg.Produce), 9)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.MaxVersions(versions))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return c, cl
}

// produce sends one batch to t/0 with acks=all and returns the partition
// response.
func produce(t *testing.T, cl *kgo.Client, batch []byte) kmsg.ProduceResponseTopicPartition {
	t.Helper()
	req := kmsg.NewPtrProduceRequest()
	req.Version = 9
	req.Acks = -1
	req.TimeoutMillis = 5000
	topic := kmsg.NewProduceRequestTopic()
	topic.Topic = "t"
	part := kmsg.NewProduceRequestTopicPartition()
	part.Partition = 0
	part.Records = batch
	topic.Partitions = append(topic.Partitions, part)
	req.Topics = append(req.Topics, topic)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("produce: %v", err)
	}
	if resp.Version != 9 {
		t.Fatalf("produce went out as v%d, want v9", resp.Version)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		t.Fatalf("produce response has unexpected shape: %+v", resp)
	}
	return resp.Topics[0].Partitions[0]
}

// consumeAll reads n records from t/0 starting at offset 0.
func consumeAll(t *testing.T, addrs []string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(addrs...),
		kgo.ConsumeTopics("t"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(out), n, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		out = append(out, fs.Records()...)
	}
	return out
}

// msg returns a broker's optional error message.
func msg(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// sameBytes compares byte strings, including whether they are null.
func sameBytes(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

func TestBroker_AcceptsEveryCodec(t *testing.T) {
	c, cl := newBroker(t)
	recs := append(append([]Record{}, recordCases[6].recs...), recordCases[7].recs...)
	recs = append(recs, recordCases[1].recs[0], recordCases[2].recs[0], recordCases[3].recs[0])
	recs = append(recs, manyRecords(300, 100)...)

	var b Builder
	type variant struct {
		name  string
		batch []byte
	}
	var variants []variant
	for _, codec := range allCodecs {
		variants = append(variants, variant{codec.String(), build(t, &b, recs, codec, -1, -1, -1)})
	}
	// The Java producer's framing, to show the broker takes both forms.
	plain := build(t, &b, recs, None, -1, -1, -1)
	xerial := withRecords(plain, appendXerial(nil, plain[BatchOverhead:]))
	binary.BigEndian.PutUint16(xerial[21:], uint16(Snappy))
	binary.BigEndian.PutUint32(xerial[17:], crc32.Checksum(xerial[21:], crc32c))
	variants = append(variants, variant{"snappy-xerial", xerial})

	for i, v := range variants {
		t.Run("produce/"+v.name, func(t *testing.T) {
			p := produce(t, cl, v.batch)
			if p.ErrorCode != 0 {
				t.Fatalf("error %v: %v", kerr.ErrorForCode(p.ErrorCode), msg(p.ErrorMessage))
			}
			if want := int64(i * len(recs)); p.BaseOffset != want {
				t.Fatalf("base offset %d, want %d", p.BaseOffset, want)
			}
		})
	}

	got := consumeAll(t, c.ListenAddrs(), len(variants)*len(recs))
	for i, v := range variants {
		t.Run("consume/"+v.name, func(t *testing.T) {
			for j, want := range recs {
				r := got[i*len(recs)+j]
				if r.Offset != int64(i*len(recs)+j) {
					t.Fatalf("record %d: offset %d", j, r.Offset)
				}
				if !sameBytes(r.Key, want.Key) || !sameBytes(r.Value, want.Value) {
					t.Fatalf("record %d: key/value %q/%q, want %q/%q", j, r.Key, r.Value, want.Key, want.Value)
				}
				if r.Timestamp.UnixMilli() != want.TimestampMs {
					t.Fatalf("record %d: timestamp %d, want %d", j, r.Timestamp.UnixMilli(), want.TimestampMs)
				}
				if len(r.Headers) != len(want.Headers) {
					t.Fatalf("record %d: %d headers, want %d", j, len(r.Headers), len(want.Headers))
				}
				for k, h := range want.Headers {
					if r.Headers[k].Key != h.Key || !sameBytes(r.Headers[k].Value, h.Value) {
						t.Fatalf("record %d header %d: %q=%q, want %q=%q", j, k, r.Headers[k].Key, r.Headers[k].Value, h.Key, h.Value)
					}
				}
			}
		})
	}
}

func TestBroker_IdempotentSequences(t *testing.T) {
	_, cl := newBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	initReq := kmsg.NewPtrInitProducerIDRequest()
	initResp, err := initReq.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("InitProducerID: %v", err)
	}
	if initResp.ErrorCode != 0 {
		t.Fatalf("InitProducerID: %v", kerr.ErrorForCode(initResp.ErrorCode))
	}
	pid, epoch := initResp.ProducerID, initResp.ProducerEpoch

	recs := manyRecords(5, 50)
	var b Builder
	first := build(t, &b, recs, Zstd, pid, epoch, 0)
	second := build(t, &b, recs, Snappy, pid, epoch, int32(len(recs)))
	gap := build(t, &b, recs, LZ4, pid, epoch, int32(3*len(recs)))

	steps := []struct {
		name   string
		batch  func() []byte
		want   *kerr.Error
		offset int64
	}{
		{"first batch at sequence 0", func() []byte { return first }, nil, 0},
		{"second batch at sequence count", func() []byte { return second }, nil, int64(len(recs))},
		{"sequence gap", func() []byte { return gap }, kerr.OutOfOrderSequenceNumber, -1},
		{"bumped epoch, sequence reset via SetProducer", func() []byte {
			SetProducer(gap, pid, epoch+1, 0)
			return gap
		}, nil, int64(2 * len(recs))},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			p := produce(t, cl, s.batch())
			var want error
			if s.want != nil {
				want = s.want
			}
			if got := kerr.ErrorForCode(p.ErrorCode); got != want {
				t.Fatalf("error %v (%v), want %v", got, msg(p.ErrorMessage), s.want)
			}
			if s.want == nil && p.BaseOffset != s.offset {
				t.Fatalf("base offset %d, want %d", p.BaseOffset, s.offset)
			}
		})
	}
}
