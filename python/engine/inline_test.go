package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// clusterBridge is a bridge producer on a fake cluster with one topic of
// one partition.
func clusterBridge(t *testing.T, topic string) *bridge {
	t.Helper()
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic(topic, 1))
	b, err := newBridge(mustJSON(map[string]any{"brokers": c.Addrs()}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.close(10_000)
		b.q.close()
	})
	return b
}

// waitCompletions takes completions until n have come (or fails the test).
func waitCompletions(t *testing.T, b *bridge, n int) []completion {
	t.Helper()
	var got []completion
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d completions after 30 s: %+v", len(got), n, got)
		}
		b.q.take(4096, 1<<16, func(_ int, c *completion) { got = append(got, *c) })
		if len(got) < n {
			time.Sleep(100 * time.Microsecond)
		}
	}
	return got
}

func sendOne(b *bridge, id uint64, topic string, mode int32) *item {
	it := &item{id: id, mode: mode, rec: kpush.Record{Topic: topic, Partition: -1, Value: fmt.Appendf(nil, "v%d", id)}}
	b.sendMany([]*item{it})
	return it
}

// TestLoneRecordHandedOverOnCallersThread: once its topic is known, a lone
// awaited record (one kp_send_many call, one record, modeSend) is handed to
// the engine before kp_send_many returns — on the caller's thread, not by
// the lane goroutine — and its outcome arrives as any other. The first
// record (metadata unknown: the engine would wait) goes through the lane.
func TestLoneRecordHandedOverOnCallersThread(t *testing.T) {
	b := clusterBridge(t, "lone")
	sendOne(b, 1, "lone", modeSend)
	if c := waitCompletions(t, b, 1); c[0].kind != kindOK {
		t.Fatalf("first record: %+v", c[0])
	}
	const n = 100
	for i := range n {
		id := uint64(2 + i)
		it := sendOne(b, id, "lone", modeSend)
		b.cmu.Lock()
		handed := it.h != nil
		b.cmu.Unlock()
		if !handed {
			t.Fatalf("record %d: not handed over when kp_send_many returned (left to the lane goroutine)", id)
		}
		c := waitCompletions(t, b, 1)
		if c[0].id != id || c[0].kind != kindOK || c[0].offset != int64(i+1) {
			t.Fatalf("record %d: completion %+v, want ok at offset %d", id, c[0], i+1)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); b.outstanding.Load() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) { // counted down just after each push
			t.Fatalf("%d records outstanding after every outcome", b.outstanding.Load())
		}
	}
}

// TestInlineAndLaneKeepOrder: lone records (inline), batches (the lane),
// send_nowait records (modeOrdered, always the lane) and records sent
// while the lane is busy, on one partition, are written in kp_send_many
// order and each completes once.
func TestInlineAndLaneKeepOrder(t *testing.T) {
	b := clusterBridge(t, "mix")
	sendOne(b, 1, "mix", modeSend)
	waitCompletions(t, b, 1)
	id := uint64(1)
	var want []uint64
	for round := range 60 {
		var its []*item
		switch round % 4 {
		case 0, 1: // lone awaited records
			its = append(its, &item{})
		case 2: // a tick's batch
			its = append(its, &item{}, &item{}, &item{})
		case 3: // a lone send_nowait
			its = append(its, &item{mode: modeOrdered})
		}
		for _, it := range its {
			id++
			it.id = id
			it.rec = kpush.Record{Topic: "mix", Partition: -1, Value: fmt.Appendf(nil, "%d", id)}
			want = append(want, id)
		}
		b.sendMany(its)
		if round%5 == 0 {
			time.Sleep(200 * time.Microsecond) // let some find the lane and the sink idle
		}
	}
	got := waitCompletions(t, b, len(want))
	byID := map[uint64]completion{}
	for _, c := range got {
		if _, dup := byID[c.id]; dup {
			t.Fatalf("record %d completed twice", c.id)
		}
		if c.kind != kindOK {
			t.Fatalf("record %d: %+v", c.id, c)
		}
		byID[c.id] = c
	}
	for i := 1; i < len(want); i++ {
		if a, z := byID[want[i-1]], byID[want[i]]; a.offset >= z.offset {
			t.Fatalf("record %d at offset %d, record %d (sent later) at %d", want[i-1], a.offset, want[i], z.offset)
		}
	}
}

// TestEmptyFlushCompletesOnCallersThread: a flush with nothing to wait for
// has its completion queued before flushAsync returns (no goroutine, no
// cross-thread wake-up); a flush with a record outstanding still waits
// for that record's outcome and comes after it.
func TestEmptyFlushCompletesOnCallersThread(t *testing.T) {
	b := clusterBridge(t, "flush")
	b.flushAsync(1, -1)
	var got []completion
	b.q.take(16, 1<<16, func(_ int, c *completion) { got = append(got, *c) })
	if len(got) != 1 || got[0].id != 1 || got[0].kind != kindFlush || got[0].cause != 0 {
		t.Fatalf("completions right after an empty flush: %+v, want flush 1", got)
	}
	sendOne(b, 2, "flush", modeSend)
	b.flushAsync(3, -1)
	c := waitCompletions(t, b, 2)
	if c[0].id != 2 || c[0].kind != kindOK || c[1].id != 3 || c[1].kind != kindFlush {
		t.Fatalf("flush with a record outstanding: %+v, want record 2 then flush 3", c)
	}
}

// refusedInline sends a lone awaited record to a topic the producer has
// no metadata for yet, so TrySendCancelable refuses it (the engine would
// wait), and runs during(first) inside that hand-over, while the lane is
// inline.
func refusedInline(t *testing.T, b *bridge, topic string, during func(first *item)) *item {
	t.Helper()
	first := &item{id: 1, mode: modeSend, rec: kpush.Record{Topic: topic, Partition: -1, Value: []byte("first")}}
	ran := false
	testHookTried = func(it *item, ok bool) {
		if it != first || ran {
			return
		}
		ran = true
		if ok {
			t.Errorf("the first record of a new topic was taken inline; the test needs it refused")
			return
		}
		during(first)
	}
	t.Cleanup(func() { testHookTried = nil })
	b.sendMany([]*item{first})
	if !ran {
		t.Fatal("the lone record was not tried inline")
	}
	return first
}

// TestRefusedInlineKeepsItsPlace: a record the engine refused inline
// (TrySendCancelable would wait) goes back at the head of its lane: a
// record whose kp_send_many call came while it was being tried (another
// thread's call, finding the lane busy) is written after it.
func TestRefusedInlineKeepsItsPlace(t *testing.T) {
	b := clusterBridge(t, "refused")
	refusedInline(t, b, "refused", func(*item) {
		b.sendMany([]*item{{id: 2, mode: modeSend, rec: kpush.Record{Topic: "refused", Partition: -1, Value: []byte("second")}}})
	})
	got := map[uint64]completion{}
	for _, c := range waitCompletions(t, b, 2) {
		got[c.id] = c
	}
	if got[1].kind != kindOK || got[2].kind != kindOK {
		t.Fatalf("completions: %+v", got)
	}
	if got[1].offset != 0 || got[2].offset != 1 {
		t.Fatalf("record 1 (called first) at offset %d, record 2 at %d; want 0 and 1", got[1].offset, got[2].offset)
	}
}

// TestCancelDuringRefusedInline: kp_cancel of a record while its inline
// hand-over is being refused withdraws it: it completes not written, as
// withdrawn before it was buffered, and nothing is written for it (the
// next record takes offset 0).
func TestCancelDuringRefusedInline(t *testing.T) {
	b := clusterBridge(t, "cancelled")
	refusedInline(t, b, "cancelled", func(first *item) { b.cancelRecord(first.id) })
	c := waitCompletions(t, b, 1)[0]
	if c.id != 1 || c.kind != kindNotWritten || !strings.Contains(c.msg, "before the record was buffered") {
		t.Fatalf("cancelled record: %+v, want not written, withdrawn before it was buffered", c)
	}
	sendOne(b, 2, "cancelled", modeSend)
	if c := waitCompletions(t, b, 1)[0]; c.id != 2 || c.kind != kindOK || c.offset != 0 {
		t.Fatalf("next record: %+v, want ok at offset 0 (the cancelled one never written)", c)
	}
}

// TestEmptyFlushZeroTimeout: a flush with nothing to wait for succeeds
// even with a zero timeout (flush(timeout=0), or under 1 ms): its
// context is done at once, and Barrier.Wait's select between the closed
// generation and the done context picked either, so half of such flushes
// reported deadline_exceeded.
func TestEmptyFlushZeroTimeout(t *testing.T) {
	b := clusterBridge(t, "flush0")
	for i := range 64 {
		b.flushAsync(uint64(i+1), 0)
		var got []completion
		b.q.take(16, 1<<16, func(_ int, c *completion) { got = append(got, *c) })
		if len(got) != 1 || got[0].kind != kindFlush || got[0].cause != 0 {
			t.Fatalf("empty flush %d with timeout 0: %+v, want a flush completion without error", i+1, got)
		}
	}
}
