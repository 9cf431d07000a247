package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Record is one record read back from the cluster by ReadAll.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte // nil if the record has no key
	Value     []byte // nil if the record has a null value
	Headers   []Header
	Timestamp time.Time
	// ProducerID and ProducerEpoch are -1 for a non-idempotent producer.
	ProducerID    int64
	ProducerEpoch int16
}

// Header is one record header.
type Header struct {
	Key   string
	Value []byte
}

// Limits on retrying a partition whose leader is moving or not yet known.
const (
	maxFetchRetries = 20
	maxRetryBackoff = 250 * time.Millisecond
)

// errNoProgress is a fetch below the high watermark that returned nothing.
var errNoProgress = errors.New("fetch returned no records below the high watermark")

// newClient returns a plain kgo client seeded with the cluster's brokers.
func (c *Cluster) newClient() (*kgo.Client, error) {
	addrs, err := c.running()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(c.clientOptions(), kgo.SeedBrokers(addrs...))...)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: new client: %w", err)
	}
	return cl, nil
}

// CreateTopic creates topic name with the given number of partitions (at
// least 1) on the running cluster, with the broker's default replication
// factor. If the topic already exists the error matches kerr.TopicAlreadyExists
// with errors.Is.
func (c *Cluster) CreateTopic(ctx context.Context, name string, partitions int32) error {
	if partitions < 1 {
		return fmt.Errorf("kafkatest: create topic %q: %d partitions, need at least 1", name, partitions)
	}
	cl, err := c.newClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	return createTopic(ctx, cl, name, partitions, nil)
}

// createTopic creates a topic through cl with the broker's default
// replication factor and the given topic configs.
func createTopic(ctx context.Context, cl *kgo.Client, name string, partitions int32, configs map[string]string) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 10_000
	t := kmsg.NewCreateTopicsRequestTopic()
	t.Topic = name
	t.NumPartitions = partitions
	t.ReplicationFactor = -1
	for k, v := range configs {
		c := kmsg.NewCreateTopicsRequestTopicConfig()
		c.Name, c.Value = k, kmsg.StringPtr(v)
		t.Configs = append(t.Configs, c)
	}
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("kafkatest: create topic %q: %w", name, err)
	}
	if len(resp.Topics) != 1 {
		return fmt.Errorf("kafkatest: create topic %q: %d topics in response, want 1", name, len(resp.Topics))
	}
	if err := kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil {
		if msg := resp.Topics[0].ErrorMessage; msg != nil && *msg != "" {
			return fmt.Errorf("kafkatest: create topic %q: %w: %s", name, err, *msg)
		}
		return fmt.Errorf("kafkatest: create topic %q: %w", name, err)
	}
	return nil
}

// ReadAll reads every record in topic from each partition's log start offset
// up to the high watermark at the time of the call, and returns them ordered
// by partition, then offset. Records produced after the call starts are not
// returned; nor are transaction markers, but records of open or aborted
// transactions are (read_uncommitted). An unknown topic is an error matching
// kerr.UnknownTopicOrPartition. ctx bounds the whole read.
func (c *Cluster) ReadAll(ctx context.Context, topic string) ([]Record, error) {
	cl, err := c.newClient()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	return readAll(ctx, cl, topic)
}

// readAll is ReadAll through cl.
func readAll(ctx context.Context, cl *kgo.Client, topic string) ([]Record, error) {
	r := &reader{cl: cl, topic: topic}
	if err := r.loadMetadata(ctx); err != nil {
		return nil, fmt.Errorf("kafkatest: read %q: %w", topic, err)
	}
	parts := make([]int32, 0, len(r.leaders))
	for p := range r.leaders {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	start, err := r.listOffsets(ctx, parts, -2) // earliest
	if err != nil {
		return nil, fmt.Errorf("kafkatest: read %q: list start offsets: %w", topic, err)
	}
	end, err := r.listOffsets(ctx, parts, -1) // latest: the high watermark
	if err != nil {
		return nil, fmt.Errorf("kafkatest: read %q: list end offsets: %w", topic, err)
	}
	var recs []Record
	for _, p := range parts {
		recs, err = r.readPartition(ctx, p, start[p], end[p], recs)
		if err != nil {
			return nil, fmt.Errorf("kafkatest: read %q partition %d: %w", topic, p, err)
		}
	}
	return recs, nil
}

// reader reads one topic for ReadAll. It is used by one goroutine.
type reader struct {
	cl      *kgo.Client
	topic   string
	topicID [16]byte
	leaders map[int32]int32 // partition to leader node ID
}

func (r *reader) loadMetadata(ctx context.Context) error {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(r.topic)
	req.Topics = append(req.Topics, rt)
	req.AllowAutoTopicCreation = false
	resp, err := req.RequestWith(ctx, r.cl)
	if err != nil {
		return err
	}
	if len(resp.Topics) != 1 {
		return fmt.Errorf("%d topics in metadata response, want 1", len(resp.Topics))
	}
	t := resp.Topics[0]
	if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
		return err
	}
	r.topicID = t.TopicID
	r.leaders = make(map[int32]int32, len(t.Partitions))
	for _, p := range t.Partitions {
		r.leaders[p.Partition] = p.Leader
	}
	return nil
}

// listOffsets returns, per partition, the offset for timestamp: -2 for the
// log start offset, -1 for the high watermark.
func (r *reader) listOffsets(ctx context.Context, parts []int32, timestamp int64) (map[int32]int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	req.IsolationLevel = 0 // read_uncommitted, so latest is the high watermark
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = r.topic
	for _, p := range parts {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p
		rp.Timestamp = timestamp
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, r.cl) // kgo sends each partition to its leader
	if err != nil {
		return nil, err
	}
	offsets := make(map[int32]int64, len(parts))
	for _, t := range resp.Topics {
		if t.Topic != r.topic {
			continue
		}
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return nil, fmt.Errorf("partition %d: %w", p.Partition, err)
			}
			offsets[p.Partition] = p.Offset
		}
	}
	for _, p := range parts {
		if _, ok := offsets[p]; !ok {
			return nil, fmt.Errorf("partition %d missing from response", p)
		}
	}
	return offsets, nil
}

// readPartition appends the records of partition p in [from, to) to recs.
func (r *reader) readPartition(ctx context.Context, p int32, from, to int64, recs []Record) ([]Record, error) {
	var (
		decompressor = kgo.DefaultDecompressor()
		retries      int
		backoff      = 10 * time.Millisecond
	)
	for offset := from; offset < to; {
		resp, err := r.fetch(ctx, p, offset)
		if err == nil && len(resp.Topics) == 1 && len(resp.Topics[0].Partitions) == 1 {
			fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
				Offset:    offset,
				Topic:     r.topic,
				Partition: p,
			}, &resp.Topics[0].Partitions[0], decompressor, nil)
			err = fp.Err
			if err == nil {
				for _, rec := range fp.Records {
					if rec.Offset >= to {
						break
					}
					recs = append(recs, convert(rec))
				}
				if next > offset {
					offset = next
					retries = 0
					continue
				}
				err = errNoProgress
			}
		} else if err == nil {
			err = errors.New("fetch response does not hold exactly the partition asked for")
		}
		retriable := kerr.IsRetriable(err) || errors.Is(err, errNoProgress)
		if ctx.Err() != nil || !retriable || retries >= maxFetchRetries {
			return nil, fmt.Errorf("fetch offset %d (high watermark %d): %w", offset, to, err)
		}
		retries++
		if err := wait(ctx, backoff); err != nil {
			return nil, err
		}
		backoff = min(2*backoff, maxRetryBackoff)
		if err := r.loadMetadata(ctx); err != nil && !kerr.IsRetriable(err) {
			return nil, err
		}
	}
	return recs, nil
}

// fetch issues one fetch of partition p at offset to the partition's leader.
func (r *reader) fetch(ctx context.Context, p int32, offset int64) (*kmsg.FetchResponse, error) {
	leader, ok := r.leaders[p]
	if !ok || leader < 0 {
		return nil, kerr.LeaderNotAvailable
	}
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis = 500
	req.MinBytes = 1
	req.MaxBytes = 64 << 20
	req.IsolationLevel = 0
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = r.topic
	rt.TopicID = r.topicID
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition = p
	rp.FetchOffset = offset
	rp.PartitionMaxBytes = 32 << 20
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return req.RequestWith(ctx, r.cl.Broker(int(leader)))
}

// wait blocks for d or until ctx is done.
func wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func convert(rec *kgo.Record) Record {
	out := Record{
		Topic:         rec.Topic,
		Partition:     rec.Partition,
		Offset:        rec.Offset,
		Key:           rec.Key,
		Value:         rec.Value,
		Timestamp:     rec.Timestamp,
		ProducerID:    rec.ProducerID,
		ProducerEpoch: rec.ProducerEpoch,
	}
	if len(rec.Headers) > 0 {
		out.Headers = make([]Header, len(rec.Headers))
		for i, h := range rec.Headers {
			out.Headers[i] = Header{Key: h.Key, Value: h.Value}
		}
	}
	return out
}
