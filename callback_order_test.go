package kpush_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestSendAsync_CallbackOrderAcrossLeaderMove: record A is acknowledged by
// partition 0's old leader while that broker's callbacks are held up by a
// slow callback of partition 1; then the leader moves and record B of
// partition 0 is acknowledged by the new leader. B's callback must still
// run after A's (order per partition), and the slow callback must not hold
// up responses (the synchronous Sends below return meanwhile).
func TestSendAsync_CallbackOrderAcrossLeaderMove(t *testing.T) {
	const topic = "cbmove"
	c := kafkatest.NewTestCluster(t, kafkatest.WithBrokers(2), kafkatest.WithTopic(topic, 2))
	f := c.Fake()
	for part := range int32(2) {
		if err := f.MoveTopicPartition(topic, part, 0); err != nil {
			t.Fatal(err)
		}
	}
	p := newProducer(t, c, kpush.WithPartitioner(kpush.ManualPartitioner), kpush.WithRetryBackoff(5*time.Millisecond))
	ctx := testCtx(t)
	send := func(part int32, v string) {
		t.Helper()
		if _, err := p.Send(ctx, &kpush.Record{Topic: topic, Partition: part, Value: []byte(v)}); err != nil {
			t.Fatalf("Send %s: %v", v, err)
		}
	}
	send(0, "warm0")
	send(1, "warm1")

	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	async := func(part int32, v string, before func()) chan struct{} {
		done := make(chan struct{})
		wg.Add(1)
		p.SendAsync(ctx, &kpush.Record{Topic: topic, Partition: part, Value: []byte(v)}, func(_ kpush.Result, err error) {
			defer wg.Done()
			if before != nil {
				before()
			}
			if err != nil {
				t.Errorf("%s: %v", v, err)
			}
			mu.Lock()
			order = append(order, v)
			mu.Unlock()
			close(done)
		})
		return done
	}
	gate := make(chan struct{})
	async(1, "x", func() { <-gate }) // holds up broker 0's callbacks
	async(0, "a", nil)
	send(0, "a2") // answered after A on the same connection: A is acknowledged
	if err := f.MoveTopicPartition(topic, 0, 1); err != nil {
		t.Fatal(err)
	}
	bDone := async(0, "b", nil)
	send(0, "b2") // acknowledged by the new leader, after B
	// Give a wrong implementation time to run B's callback first.
	select {
	case <-bDone:
	case <-time.After(2 * time.Second):
	}
	close(gate)
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		t.Fatal("callbacks did not all run")
	}
	got := strings.Join(order, ",")
	if ia, ib := strings.Index(got, "a"), strings.Index(got, "b"); ia < 0 || ib < 0 || ib < ia {
		t.Fatalf("callback order %s: B (new leader) ran before A (old leader) of the same partition", got)
	}
}
