package sink

// KIP-951 leader hints: a broker that answers a produce request with
// NOT_LEADER_OR_FOLLOWER (Produce v10+) names the partition's current
// leader and its epoch, and the endpoints of the brokers it names, so the
// producer can move the partition without waiting for a metadata refresh.
//
// Ownership: reportLeaderHints runs on the connection's reader goroutine,
// at the end of Sink.handle, with no partition lock held; the handler it
// calls must not block for long (it delays this connection's later
// responses). leaderHints is set once, before any sink exists, and
// read-only afterwards.

import (
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// LeaderHint is a produce response's CurrentLeader for a partition the
// answering broker no longer leads (KIP-951).
type LeaderHint struct {
	Topic     string
	Partition int32
	Leader    int32 // node id of the current leader
	Epoch     int32 // its leader epoch
}

// Endpoint is a broker named in a produce response's NodeEndpoints.
type Endpoint struct {
	ID   int32
	Addr string // host:port
}

// SetLeaderHints sets the function that receives the leader hints of each
// produce response that carries some. Call it before creating any sink.
func (e *Engine) SetLeaderHints(f func([]LeaderHint, []Endpoint)) { e.leaderHints = f }

// reportLeaderHints passes resp's usable hints to the handler: partitions
// answered with NOT_LEADER_OR_FOLLOWER whose CurrentLeader names a leader
// and an epoch. Older responses carry none.
func (e *Engine) reportLeaderHints(resp *kmsg.ProduceResponse) {
	if e.leaderHints == nil || resp == nil || resp.GetVersion() < 10 {
		return
	}
	var hints []LeaderHint
	for i := range resp.Topics {
		t := &resp.Topics[i]
		for j := range t.Partitions {
			rp := &t.Partitions[j]
			cl := rp.CurrentLeader
			if rp.ErrorCode != kerr.NotLeaderForPartition.Code || cl.LeaderID < 0 || cl.LeaderEpoch < 0 {
				continue
			}
			hints = append(hints, LeaderHint{Topic: t.Topic, Partition: rp.Partition, Leader: cl.LeaderID, Epoch: cl.LeaderEpoch})
		}
	}
	if len(hints) == 0 {
		return
	}
	eps := make([]Endpoint, 0, len(resp.Brokers))
	for _, b := range resp.Brokers {
		eps = append(eps, Endpoint{ID: b.NodeID, Addr: net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))})
	}
	e.leaderHints(hints, eps)
}
