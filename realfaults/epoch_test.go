package realfaults

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/internal/batch"
)

// bumpHooks records the retries caused by OUT_OF_ORDER_SEQUENCE_NUMBER and
// the epoch bumps of one producer.
type bumpHooks struct {
	mu    sync.Mutex
	oosn  int
	bumps []kpush.EpochBumpEvent
}

func (h *bumpHooks) OnRetry(ev kpush.RetryEvent) {
	if errors.Is(ev.Cause, kerr.OutOfOrderSequenceNumber) {
		h.mu.Lock()
		h.oosn++
		h.mu.Unlock()
	}
}

func (h *bumpHooks) OnEpochBump(ev kpush.EpochBumpEvent) {
	h.mu.Lock()
	h.bumps = append(h.bumps, ev)
	h.mu.Unlock()
}

// TestRealFaults_EpochBumpAfterForeignSequence makes a real broker answer
// OUT_OF_ORDER_SEQUENCE_NUMBER that no earlier failure explains: another
// client writes a two-record batch under kpush's own producer ID and epoch,
// at the sequence kpush uses next, so the broker's last sequence is one
// past kpush's next one-record batch. kpush must bump the epoch and
// resend under the new one: exactly one OUT_OF_ORDER_SEQUENCE_NUMBER
// answer (a resend under the old ID is refused again, one wasted round
// trip per retry backoff until the bump lands; the 1ms backoff here makes
// that likely), every kpush record once and in order. (Kafka 4 answers an
// idempotent producer's InitProducerID with a new producer ID, epoch 0.)
func TestRealFaults_EpochBumpAfterForeignSequence(t *testing.T) {
	fc := sharedFaultCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	topic := "epoch-foreign-sequence-" + strconv.FormatInt(topicSeq.Add(1), 10)
	if err := fc.createTopic(ctx, topic, 1, nil); err != nil {
		t.Fatal(err)
	}
	h := &bumpHooks{}
	p, err := kpush.New(kpush.WithBrokers(fc.clientAddrs()...), kpush.WithDeliveryTimeout(deliveryTimeout),
		kpush.WithRetryBackoff(time.Millisecond), kpush.WithHooks(h))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	send := func(i int) {
		t.Helper()
		if _, err := p.Send(ctx, &kpush.Record{Topic: topic, Value: []byte("kpush-" + strconv.Itoa(i))}); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	for i := range 10 { // one at a time: one-record batches, sequences 0..9
		send(i)
	}
	ds, err := fc.adm.DescribeProducers(ctx, kadm.TopicsSet{topic: nil})
	if err != nil {
		t.Fatal(err)
	}
	var st []kadm.DescribedProducer
	ds.EachProducer(func(d kadm.DescribedProducer) { st = append(st, d) })
	if len(st) != 1 || st[0].LastSequence != 9 {
		t.Fatalf("broker's producer state %+v, want kpush's alone at last sequence 9", st)
	}
	// The foreign batch: kpush's ID and epoch, sequences 10 and 11.
	var bl batch.Builder
	for i := range 2 {
		bl.Append(&batch.Record{Value: []byte("foreign-" + strconv.Itoa(i)), TimestampMs: time.Now().UnixMilli()})
	}
	recs, err := bl.Finish(batch.None, st[0].ProducerID, st[0].ProducerEpoch, st[0].LastSequence+1)
	if err != nil {
		t.Fatal(err)
	}
	tds, err := fc.adm.ListTopics(ctx, topic) // Produce v13+ names topics by ID
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 10000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = topic, tds[topic].ID
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = recs
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	// Retriable: the brokers close idle connections (connections.max.idle.ms),
	// and a Produce of this idempotent batch is safe to send again.
	resp, err := fc.cl.Broker(int(st[0].Leader)).RetriableRequest(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if code := resp.(*kmsg.ProduceResponse).Topics[0].Partitions[0].ErrorCode; code != 0 {
		t.Fatalf("foreign batch: %v", kerr.ErrorForCode(code))
	}
	for i := 10; i < 20; i++ { // the first is refused with OUT_OF_ORDER_SEQUENCE_NUMBER
		send(i)
	}
	h.mu.Lock()
	oosn, bumps := h.oosn, append([]kpush.EpochBumpEvent(nil), h.bumps...)
	h.mu.Unlock()
	t.Logf("%d OUT_OF_ORDER_SEQUENCE_NUMBER answers, bumps %+v, requests %d, retries %d", oosn, bumps, p.Stats().Requests, p.Stats().Retries)
	if len(bumps) != 1 {
		t.Errorf("%d epoch bumps, want 1", len(bumps))
	}
	if oosn != 1 {
		t.Errorf("%d OUT_OF_ORDER_SEQUENCE_NUMBER answers, want 1: the refused batch was resent under the old epoch before the new one was installed", oosn)
	}
	got, err := fc.readAll(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	next := 0
	for _, r := range got {
		v := string(r.Value)
		if len(v) > 8 && v[:8] == "foreign-" {
			continue
		}
		if v != "kpush-"+strconv.Itoa(next) {
			t.Fatalf("offset %d holds %q, want kpush-%d (lost, duplicated or reordered)", r.Offset, v, next)
		}
		next++
	}
	if next != 20 || len(got) != 22 {
		t.Fatalf("log holds %d records (%d of kpush's in order), want 22 (20 and the 2 foreign ones)", len(got), next)
	}
}
