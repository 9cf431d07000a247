package kpush_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/internal/wire"
	"github.com/kpush/kpush/kafkatest"
)

// TestSend_LeaderHintMovesPartition: after a leader move, the old leader
// answers NOT_LEADER_OR_FOLLOWER with the new leader and its epoch
// (KIP-951), while every metadata answer stays stale (the old leader, the
// old epoch: a lagging broker). The partition must move on the hint and
// stay moved: stale metadata with an older epoch never moves it back
// (KIP-320). Before, kpush waited for metadata that never came and the
// records failed at the delivery timeout.
func TestSend_LeaderHintMovesPartition(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithBrokers(2), kafkatest.WithTopic("mv", 1))
	ctx := testCtx(t)
	p := newProducer(t, c, kpush.WithDeliveryTimeout(8*time.Second), kpush.WithRequestTimeout(3*time.Second))
	if _, err := p.Send(ctx, &kpush.Record{Topic: "mv", Value: []byte("0")}); err != nil {
		t.Fatal(err)
	}

	// Capture today's metadata; it becomes the stale answer.
	conn, err := wire.Dial(ctx, c.Addrs()[0], &wire.Config{})
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr("mv")
	req.Topics = append(req.Topics, rt)
	r, err := conn.Request(ctx, req)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	stale := r.(*kmsg.MetadataResponse)
	if len(stale.Topics) != 1 || len(stale.Topics[0].Partitions) != 1 {
		t.Fatalf("unexpected metadata %+v", stale.Topics)
	}
	old := stale.Topics[0].Partitions[0]
	if old.LeaderEpoch < 0 {
		t.Fatalf("kfake gave no leader epoch")
	}
	f := c.Fake()
	var staleOn atomic.Bool
	staleOn.Store(true)
	f.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		if !staleOn.Load() {
			return nil, nil, false
		}
		resp := *stale
		resp.Version = req.GetVersion()
		return &resp, nil, true
	})
	newLeader := 1 - old.Leader
	if err := f.MoveTopicPartition("mv", 0, newLeader); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		if _, err := p.Send(ctx, &kpush.Record{Topic: "mv", Value: []byte{byte(i)}}); err != nil {
			t.Fatalf("record %d after the move (stale metadata names broker %d, epoch %d): %v", i, old.Leader, old.LeaderEpoch, err)
		}
	}
	staleOn.Store(false) // the reader below needs the truth
	recs, err := c.ReadAll(ctx, "mv")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 21 {
		t.Errorf("%d records in the topic, want 21", len(recs))
	}
	// Stale metadata applied after the hint would have sent later
	// records to the old leader again, each costing a retry.
	if s := p.Stats(); s.Retries > 2 {
		t.Errorf("%d retries after one leader move; stale metadata moved the partition back", s.Retries)
	}
}
