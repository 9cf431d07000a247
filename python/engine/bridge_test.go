package main

import (
	"errors"
	"testing"
	"time"

	"github.com/kpush/kpush"
)

// testBridge is a bridge producer that never dials: its tests send nothing
// to a broker (port 1 on the loopback refuses at once if it ever did).
func testBridge(t *testing.T) *bridge {
	t.Helper()
	b, err := newBridge([]byte(`{"brokers":["127.0.0.1:1"]}`))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A kp_send_many that checked b.closed just before a close began copies its
// batch while close stops intake. The batch must be refused (kp_send_many
// then reports closed), not appended to an intake list nobody reads, where
// its outcomes never come and close waits for them forever.
func TestSendManyAfterIntakeStoppedIsRefused(t *testing.T) {
	b := testBridge(t)
	// What close does first, before it waits for outcomes.
	b.imu.Lock()
	b.intakeClosed = true
	b.imu.Unlock()
	its := []*item{{id: 1, rec: kpush.Record{Topic: "t", Value: []byte("x")}}}
	if b.sendMany(its) {
		t.Error("sendMany accepted a batch after intake stopped")
	}
	errc := make(chan error, 1)
	go func() { errc <- b.close(1000) }()
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, kpush.ErrClosed) {
			t.Errorf("close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("close never returned: %d records outstanding that no goroutine will complete", b.outstanding.Load())
	}
	b.q.close()
}

// A record kp_send_many could not decode fails through its completion,
// counted with its batch, so a flush or close waits for it to be pushed.
func TestMalformedRecordFailsAtHandOver(t *testing.T) {
	b := testBridge(t)
	defer b.q.close()
	bad := &item{id: 7, mode: modeSend, err: &kpush.ProduceError{Partition: -1, Err: kpush.ErrInvalidHeader}}
	if !b.sendMany([]*item{bad}) {
		t.Fatal("sendMany refused a batch on an open producer")
	}
	if err := b.close(5000); err != nil {
		t.Fatalf("close: %v", err)
	}
	var got []completion
	b.q.take(16, 1<<16, func(_ int, c *completion) { got = append(got, *c) })
	if len(got) != 1 || got[0].id != 7 || got[0].kind != kindNotWritten {
		t.Fatalf("completions %+v, want one not-written outcome for id 7", got)
	}
}

// A flush waits for the records accepted before it (its generation), not
// for records accepted after: with no reachable broker, a later record
// stays outstanding (waiting for metadata) while the flush of the earlier,
// already failed record returns.
func TestFlushWaitsOnlyForEarlierRecords(t *testing.T) {
	b := testBridge(t)
	bad := &item{id: 1, mode: modeSend, err: &kpush.ProduceError{Partition: -1, Err: kpush.ErrInvalidHeader}}
	if !b.sendMany([]*item{bad}) {
		t.Fatal("sendMany refused a batch on an open producer")
	}
	barrier, err := b.seal()
	if err != nil {
		t.Fatal(err)
	}
	stuck := &item{id: 2, mode: modeSend, rec: kpush.Record{Topic: "t", Value: []byte("x")}}
	if !b.sendMany([]*item{stuck}) {
		t.Fatal("sendMany refused a batch on an open producer")
	}
	if err := b.flush(barrier, nil, 10_000); err != nil {
		t.Fatalf("flush of the first record's generation: %v (it waited for the later record)", err)
	}
	if n := b.outstanding.Load(); n != 1 {
		t.Fatalf("outstanding = %d after the flush, want 1 (the later record)", n)
	}
	// A flush sealed now covers the stuck record: it times out.
	barrier, _ = b.seal()
	if err := b.flush(barrier, nil, 50); err == nil {
		t.Fatal("a flush after the stuck record returned before it had an outcome")
	}
	if err := b.close(0); err != nil && !errors.Is(err, kpush.ErrClosed) {
		t.Logf("close: %v", err)
	}
	b.q.close()
}

// Two kp_close_async calls (abandon() from the garbage collector's thread,
// then close() on the loop's): the first one called is the real close. Its
// check and the end of intake happen on the caller's thread, so no
// goroutine scheduling can make the second call the real one, whose
// completion would then come at once, before the records' outcomes.
func TestFirstCloseAsyncCalledIsTheRealClose(t *testing.T) {
	b := testBridge(t)
	defer b.q.close()
	stuck := &item{id: 10, mode: modeSend, rec: kpush.Record{Topic: "t", Value: []byte("x")}}
	if !b.sendMany([]*item{stuck}) {
		t.Fatal("sendMany refused a batch on an open producer")
	}
	b.closeAsync(1, 200)
	// No goroutine had to run: intake is already stopped.
	if b.sendMany([]*item{{id: 11, mode: modeSend, rec: kpush.Record{Topic: "t", Value: []byte("y")}}}) {
		t.Fatal("sendMany accepted a batch after kp_close_async returned")
	}
	b.closeAsync(2, 200)
	var order []uint64
	causes := map[uint64]int32{}
	deadline := time.Now().Add(30 * time.Second)
	for len(causes) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("completions so far %v: a close never completed", order)
		}
		b.q.take(16, 1<<16, func(i int, c *completion) {
			order = append(order, c.id)
			causes[c.id] = c.cause
		})
		time.Sleep(5 * time.Millisecond)
	}
	if causes[2] != causeClosed {
		t.Errorf("second close: cause %d, want causeClosed (%d)", causes[2], causeClosed)
	}
	pos := map[uint64]int{}
	for i, id := range order {
		pos[id] = i
	}
	if pos[1] < pos[10] {
		t.Errorf("completion order %v: the first close completed before the record's outcome (it was treated as the second)", order)
	}
}
