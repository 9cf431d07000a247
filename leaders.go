package kpush

// Leader epochs (KIP-320) and KIP-951 leader hints.
//
// Ownership: leader changes come from the metadata goroutine
// (applyMetadata) and from connection reader goroutines (applyLeaderHints,
// for produce responses that name the new leader). Producer.leaderMu
// serializes them and guards every topic's epochs. Lock order: leaderMu →
// Producer.mu (looking up or creating a sink, released at once) and
// leaderMu → Partition.mu (SetLeader); nothing takes leaderMu while
// holding another kpush lock.

import "github.com/kpush/kpush/internal/sink"

// acceptEpochLocked reports whether partition i's metadata with leader
// epoch epoch may be applied, and records the epoch: metadata older than
// what was applied before (a broker lagging behind a leader change) must
// not move the leader back. An unknown epoch (-1: Metadata before v7)
// is always applied and leaves the known epoch as it was. leaderMu is held.
func (t *topic) acceptEpochLocked(i int, epoch int32) bool {
	for len(t.epochs) <= i {
		t.epochs = append(t.epochs, -1)
	}
	if epoch < 0 {
		return true
	}
	if epoch < t.epochs[i] {
		return false
	}
	t.epochs[i] = epoch
	return true
}

// checkTopicIDLocked forgets the known leader epochs when the topic's ID
// changed (the topic was deleted and created again, KIP-516): the new
// topic's epochs start again from 0, and like the Java client's Metadata
// we accept them. A zero id (Metadata before v10) changes nothing.
// leaderMu is held.
func (t *topic) checkTopicIDLocked(id [16]byte) {
	if id == ([16]byte{}) || id == t.topicID {
		return
	}
	if t.topicID != ([16]byte{}) {
		t.epochs = t.epochs[:0]
	}
	t.topicID = id
}

// applyLeaderHints moves partitions to the leaders that produce responses
// name (KIP-951), without waiting for a metadata refresh. Like franz-go,
// only a newer epoch than the one known moves a partition (an equal or
// older one is as stale as our metadata), and only when our epoch is
// known at all. A leader with no sink yet gets one at the address the
// response gives. Runs on a connection reader goroutine.
func (p *Producer) applyLeaderHints(hints []sink.LeaderHint, eps []sink.Endpoint) {
	topics := *p.topics.Load()
	var moved []sink.LeaderHint // logged after unlocking: the logger is user code
	p.leaderMu.Lock()
	for _, h := range hints {
		t := topics[h.Topic]
		if t == nil {
			continue
		}
		parts := *t.parts.Load()
		i := int(h.Partition)
		if i < 0 || i >= len(parts) || i >= len(t.epochs) || t.epochs[i] < 0 || h.Epoch <= t.epochs[i] {
			continue
		}
		sk := p.hintSink(h.Leader, eps)
		if sk == nil {
			continue // unknown broker: the metadata refresh the error triggered moves it
		}
		t.epochs[i] = h.Epoch
		parts[i].SetLeader(sk)
		moved = append(moved, h)
	}
	p.leaderMu.Unlock()
	for _, h := range moved {
		p.cfg.logger.Debug("kpush: partition moved by a leader hint (KIP-951)", "topic", h.Topic, "partition", h.Partition, "leader", h.Leader, "epoch", h.Epoch)
	}
}

// hintSink returns the sink of broker id, creating it from the hint's
// endpoints when the producer has none; nil when neither knows the broker
// or the producer is closing.
func (p *Producer) hintSink(id int32, eps []sink.Endpoint) *sink.Sink {
	p.mu.Lock()
	defer p.mu.Unlock()
	if sk := p.sinks[id]; sk != nil {
		return sk
	}
	select {
	case <-p.eng.Stopping():
		return nil
	default:
	}
	for _, ep := range eps {
		if ep.ID == id {
			sk := p.eng.NewSink(id, ep.Addr)
			p.sinks[id] = sk
			return sk
		}
	}
	return nil
}
