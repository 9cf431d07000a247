package kpush_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// leaderlessMetadata makes the one-broker cluster c describe topic as
// having n partitions, all led by broker 0 except noLeader, which has no
// leader (LEADER_NOT_AVAILABLE). Other topics get an empty answer.
func leaderlessMetadata(t *testing.T, c *kafkatest.Cluster, topic string, n, noLeader int32) {
	t.Helper()
	host, port, err := net.SplitHostPort(c.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	portN, _ := strconv.Atoi(port)
	f := c.Fake()
	f.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		resp := req.ResponseKind().(*kmsg.MetadataResponse)
		b := kmsg.NewMetadataResponseBroker()
		b.NodeID, b.Host, b.Port = 0, host, int32(portN)
		resp.Brokers = append(resp.Brokers, b)
		resp.ControllerID = 0
		for _, rt := range req.(*kmsg.MetadataRequest).Topics {
			if rt.Topic == nil || *rt.Topic != topic {
				continue
			}
			mt := kmsg.NewMetadataResponseTopic()
			mt.Topic = kmsg.StringPtr(topic)
			for i := range n {
				mp := kmsg.NewMetadataResponseTopicPartition()
				mp.Partition, mp.Leader, mp.Replicas, mp.ISR = i, 0, []int32{0}, []int32{0}
				if i == noLeader {
					mp.Leader, mp.ErrorCode = -1, kerr.LeaderNotAvailable.Code
				}
				mt.Partitions = append(mt.Partitions, mp)
			}
			resp.Topics = append(resp.Topics, mt)
		}
		return resp, nil, true
	})
}

// TestSend_KeylessSkipsPartitionWithoutLeader: keyless records never go
// to a partition whose leader is gone while other partitions have one
// (KIP-794's BuiltInPartitioner does the same); before, a third of them
// sat there until the delivery timeout.
func TestSend_KeylessSkipsPartitionWithoutLeader(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("nl", 3))
	leaderlessMetadata(t, c, "nl", 3, 1)
	p := newProducer(t, c, kpush.WithDeliveryTimeout(3*time.Second), kpush.WithRequestTimeout(2*time.Second))
	ctx := testCtx(t)
	const n = 1000 // ~100 KiB: several sticky switches
	type outcome struct {
		res kpush.Result
		err error
	}
	done := make(chan outcome, n)
	value := make([]byte, 100)
	for range n {
		p.SendAsync(ctx, &kpush.Record{Topic: "nl", Value: value}, func(r kpush.Result, err error) { done <- outcome{r, err} })
	}
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	perPart := map[int32]int{}
	var failed int
	for range n {
		select {
		case o := <-done:
			if o.err != nil {
				failed++
				if failed == 1 {
					t.Errorf("record failed: %v", o.err)
				}
				continue
			}
			perPart[o.res.Partition]++
		case <-fctx.Done():
			t.Fatalf("outcomes missing: %v", fctx.Err())
		}
	}
	if failed > 0 || perPart[1] > 0 {
		t.Errorf("%d of %d records failed; per partition %v; want none failed and none on partition 1 (no leader)", failed, n, perPart)
	}
}
