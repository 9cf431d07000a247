package kpush

import (
	"context"
	"testing"
	"time"

	"github.com/kpush/kpush/internal/meta"
	"github.com/kpush/kpush/internal/partitioner"
	"github.com/kpush/kpush/internal/sink"
)

// TestApplyMetadata_LeaderEpochs: metadata with an older leader epoch than
// the one applied (a lagging broker, KIP-320) never moves a partition's
// leader back; a newer one does; an unknown epoch (-1, Metadata before
// v7) is applied. KIP-951 hints move a partition only with a newer epoch
// than known, and create the sink of a leader known only from the hint's
// endpoints.
func TestApplyMetadata_LeaderEpochs(t *testing.T) {
	p, err := New(WithBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.Close(ctx)
	}()
	// A topic nothing sends to: the metadata goroutine never fetches, so
	// only this test applies metadata.
	tp := &topic{name: "t", picker: partitioner.NewPicker(partitioner.Sticky, stickyBytes), ready: make(chan struct{})}
	empty := []*sink.PartitionQueue{}
	tp.parts.Store(&empty)
	p.mu.Lock()
	p.topics.Store(&map[string]*topic{"t": tp})
	p.mu.Unlock()

	brokers := map[int32]meta.Broker{1: {ID: 1, Addr: "127.0.0.1:1"}, 2: {ID: 2, Addr: "127.0.0.1:2"}}
	apply := func(leader, epoch int32) {
		p.applyMetadata(&meta.Snapshot{Brokers: brokers, Topics: map[string]meta.Topic{
			"t": {Name: "t", Partitions: []meta.PartitionInfo{{ID: 0, Leader: leader, LeaderEpoch: epoch}}},
		}}, nil)
	}
	leaderOf := func() int32 {
		l := (*tp.parts.Load())[0].Leader()
		p.mu.Lock()
		defer p.mu.Unlock()
		for id, sk := range p.sinks {
			if sk == l {
				return id
			}
		}
		return -1
	}
	step := func(what string, want int32) {
		t.Helper()
		if got := leaderOf(); got != want {
			t.Fatalf("%s: leader %d, want %d", what, got, want)
		}
	}
	apply(1, 5)
	step("epoch 5 names broker 1", 1)
	apply(2, 4)
	step("stale metadata (epoch 4) names broker 2", 1)
	apply(2, 6)
	step("epoch 6 names broker 2", 2)
	apply(1, 6)
	step("same epoch 6 names broker 1", 1) // equal epochs apply (the metadata may correct a hint)
	apply(2, 7)

	hint := func(leader, epoch int32, eps ...sink.Endpoint) {
		p.applyLeaderHints([]sink.LeaderHint{{Topic: "t", Partition: 0, Leader: leader, Epoch: epoch}}, eps)
	}
	hint(1, 7)
	step("hint with the known epoch 7", 2)
	hint(1, 6)
	step("hint with an older epoch", 2)
	hint(1, 8)
	step("hint with epoch 8", 1)
	apply(2, 7)
	step("stale metadata after the hint", 1)
	hint(3, 9, sink.Endpoint{ID: 3, Addr: "127.0.0.1:3"})
	step("hint naming a broker known only from its endpoints", 3)
	apply(1, -1)
	step("metadata without epochs", 1)

	// The topic is deleted and created again: a new topic ID, epochs from 0.
	applyID := func(id byte, leader, epoch int32) {
		p.applyMetadata(&meta.Snapshot{Brokers: brokers, Topics: map[string]meta.Topic{
			"t": {Name: "t", ID: [16]byte{id}, Partitions: []meta.PartitionInfo{{ID: 0, Leader: leader, LeaderEpoch: epoch}}},
		}}, nil)
	}
	applyID(1, 2, 20)
	step("topic ID 1, epoch 20", 2)
	applyID(1, 1, 3)
	step("topic ID 1, stale epoch 3", 2)
	applyID(2, 1, 0)
	step("recreated topic (ID 2), epoch 0", 1)
}

// TestRemoveGoneSinks_RacesLeaderHint: a KIP-951 hint (reader goroutine)
// that moves a partition to a broker's sink while the metadata goroutine
// is removing that sink (the broker left the metadata) must not leave the
// partition leading through a stopped sink that the producer forgot.
func TestRemoveGoneSinks_RacesLeaderHint(t *testing.T) {
	p, err := New(WithBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.Close(ctx)
	}()
	tp := &topic{name: "t", picker: partitioner.NewPicker(partitioner.Sticky, stickyBytes), ready: make(chan struct{})}
	empty := []*sink.PartitionQueue{}
	tp.parts.Store(&empty)
	p.mu.Lock()
	p.topics.Store(&map[string]*topic{"t": tp})
	p.mu.Unlock()
	apply := func(brokers map[int32]meta.Broker, leader, epoch int32) {
		p.applyMetadata(&meta.Snapshot{Brokers: brokers, Topics: map[string]meta.Topic{
			"t": {Name: "t", Partitions: []meta.PartitionInfo{{ID: 0, Leader: leader, LeaderEpoch: epoch}}},
		}}, nil)
	}
	b1 := meta.Broker{ID: 1, Addr: "127.0.0.1:1"}
	apply(map[int32]meta.Broker{1: b1, 2: {ID: 2, Addr: "127.0.0.1:2"}}, 1, 5)

	hint := func() {
		p.applyLeaderHints([]sink.LeaderHint{{Topic: "t", Partition: 0, Leader: 2, Epoch: 6}},
			[]sink.Endpoint{{ID: 2, Addr: "127.0.0.1:2"}})
	}
	hinted := false
	testHookGoneScanned = func() {
		// The hint's reader goroutine gets in when leader changes are not
		// serialized with the removal; else it comes after (below).
		if p.leaderMu.TryLock() {
			p.leaderMu.Unlock()
			hint()
			hinted = true
		}
	}
	defer func() { testHookGoneScanned = nil }()
	apply(map[int32]meta.Broker{1: b1}, 1, 5) // broker 2 left the metadata
	if !hinted {
		hint()
	}
	l := (*tp.parts.Load())[0].Leader()
	p.mu.Lock()
	known := l != nil && p.sinks[2] == l
	n := len(p.sinks)
	p.mu.Unlock()
	if !known {
		t.Fatalf("the hint moved partition 0 to a sink the producer stopped and forgot (leader %p, %d sinks known)", l, n)
	}
}
