package kpush_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// Lent reads (internal/wire/ownread.go): a Send whose ctx has no Done
// channel, writing a lone request itself (Sink.kick), also reads the
// response on its goroutine.

// holdNextProduce makes the broker hold the next produce request once arm is
// called, until release is called (or the test ends); held is closed when
// the broker has it. Other produce requests pass.
func holdNextProduce(t *testing.T, c *kafkatest.Cluster) (arm func(), held <-chan struct{}, release func()) {
	f := c.Fake()
	var armed atomic.Bool
	h := make(chan struct{})
	rel := make(chan struct{})
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		if !armed.CompareAndSwap(true, false) {
			return nil, nil, false
		}
		close(h)
		c.SleepControl(func() { <-rel }) // Close waits for it to resume (kafkatest)
		return nil, nil, false
	})
	var once sync.Once
	release = func() { once.Do(func() { close(rel) }) }
	t.Cleanup(release) // before the cluster's Close
	return func() { armed.Store(true) }, h, release
}

// checkOnceInOrder reads topic back and checks that it holds exactly the
// values want, in that order (one partition) or per key (keyed).
func checkOnceInOrder(t *testing.T, c *kafkatest.Cluster, topic string, want map[string][]string) {
	t.Helper()
	recs, err := c.ReadAll(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, r := range recs {
		got[string(r.Key)] = append(got[string(r.Key)], string(r.Value))
	}
	for k, vs := range want {
		if fmt.Sprint(got[k]) != fmt.Sprint(vs) {
			t.Fatalf("key %q: log holds %v, want %v", k, got[k], vs)
		}
	}
}

// TestSend_IdleSinkReadsOnCallersGoroutine: one goroutine sending one
// record at a time with a ctx that cannot be canceled writes each request
// itself and reads its response itself, so the connection's reader
// goroutine does not wake it; with a cancelable ctx it never does (the
// wait must stay interruptible).
func TestSend_IdleSinkReadsOnCallersGoroutine(t *testing.T) {
	const topic = "own-read"
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic(topic, 1))
	p := newProducer(t, c)
	work := p.CountSinkWork()
	ctx := context.Background()
	if _, err := p.Send(ctx, &kpush.Record{Topic: topic, Value: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	const n = 200
	want := []string{"first"}
	for i := range n {
		v := fmt.Sprintf("v%d", i)
		res, err := p.Send(ctx, &kpush.Record{Topic: topic, Value: []byte(v)})
		if err != nil {
			t.Fatal(err)
		}
		if res.Offset != int64(i+1) {
			t.Fatalf("record %d at offset %d", i, res.Offset)
		}
		want = append(want, v)
	}
	own, misses := work.OwnReads.Load(), work.OwnReadMisses.Load()
	t.Logf("%d sends: %d read by the caller, %d lent reads missed", n, own, misses)
	// Slack for a busy machine: a lend unused for 10 ms goes back to the reader.
	if own < n-n/10 {
		t.Fatalf("%d sends: %d responses read by the caller, want nearly all", n, own)
	}

	cctx := testCtx(t) // has a Done channel
	inline0 := work.InlineWrites.Load()
	for i := range 50 {
		v := fmt.Sprintf("c%d", i)
		if _, err := p.Send(cctx, &kpush.Record{Topic: topic, Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
		want = append(want, v)
	}
	if got := work.OwnReads.Load() + work.OwnReadMisses.Load(); got != own+misses {
		t.Fatalf("cancelable Sends were lent %d reads, want none", got-own-misses)
	}
	if work.InlineWrites.Load() == inline0 {
		t.Fatal("cancelable Sends wrote no request themselves (the test no longer exercises the idle sink)")
	}
	checkOnceInOrder(t, c, topic, map[string][]string{"": want})
}

// TestSend_ConnectionDiesDuringLentRead: the broker drops the connection
// while a Send waits in its lent read; that record and every other gets
// exactly one outcome (here success: the idempotent producer resends on a
// new connection), nothing is duplicated or lost, and later Sends read
// their own responses again.
func TestSend_ConnectionDiesDuringLentRead(t *testing.T) {
	const topic = "own-read-drop"
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic(topic, 1))
	f := c.Fake()
	p := newProducer(t, c, kpush.WithRetryBackoff(5*time.Millisecond))
	work := p.CountSinkWork()
	ctx := context.Background()
	var produces atomic.Int32
	var ownBeforeDrop atomic.Int64
	const dropAt = 30
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		if produces.Add(1) != dropAt {
			return nil, nil, false
		}
		ownBeforeDrop.Store(work.OwnReads.Load())
		c.SleepControl(func() { time.Sleep(30 * time.Millisecond) }) // the sender is in its read
		return nil, errors.New("drop the connection"), true
	})
	var want []string
	for i := range 80 {
		v := fmt.Sprintf("v%d", i)
		if _, err := p.Send(ctx, &kpush.Record{Topic: topic, Value: []byte(v)}); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		want = append(want, v)
	}
	if produces.Load() < dropAt {
		t.Fatalf("only %d produce requests: the drop never happened", produces.Load())
	}
	own, misses := work.OwnReads.Load(), work.OwnReadMisses.Load()
	t.Logf("own reads %d (%d before the drop), misses %d", own, ownBeforeDrop.Load(), misses)
	if misses == 0 {
		t.Fatal("no lent read was cut short: the drop did not hit a lent read")
	}
	if own <= ownBeforeDrop.Load() {
		t.Fatal("no Send read its own response after the connection was replaced")
	}
	checkOnceInOrder(t, c, topic, map[string][]string{"": want})
}

// TestSend_BrokerErrorDuringLentRead: a retriable error in the response a
// Send reads itself sends the record again (by the sink's loop) and Send
// returns its success; the next Sends read their own responses again.
func TestSend_BrokerErrorDuringLentRead(t *testing.T) {
	const topic = "own-read-err"
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic(topic, 1))
	f := c.Fake()
	p := newProducer(t, c, kpush.WithRetryBackoff(5*time.Millisecond))
	work := p.CountSinkWork()
	ctx := context.Background()
	want := []string{}
	send := func(v string) {
		t.Helper()
		if _, err := p.Send(ctx, &kpush.Record{Topic: topic, Value: []byte(v)}); err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		want = append(want, v)
	}
	for i := range 10 {
		send(fmt.Sprintf("a%d", i))
	}
	own0 := work.OwnReads.Load()
	f.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotLeaderForPartition})
	send("faulted")
	if work.OwnReads.Load() == own0 {
		t.Fatal("the faulted response was not read by its Send")
	}
	own1 := work.OwnReads.Load()
	for i := range 10 {
		send(fmt.Sprintf("b%d", i))
	}
	if work.OwnReads.Load() == own1 {
		t.Fatal("no Send read its own response after the retry")
	}
	checkOnceInOrder(t, c, topic, map[string][]string{"": want})
}

// TestSend_SendersJoinDuringLentRead: while a Send waits in its lent read
// (the broker holds its request), other senders — cancelable and not —
// queue records; their requests are written behind it by the sink's loop
// and read by the reader goroutine once the borrower hands the read back.
// Every record lands once, in order per sender.
func TestSend_SendersJoinDuringLentRead(t *testing.T) {
	const topic = "own-read-join"
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic(topic, 1))
	p := newProducer(t, c)
	work := p.CountSinkWork()
	bg := context.Background()
	// The first record is the loop's (dial, producer ID) and so is the
	// read of its response; the next ones find the read lent.
	warm := []string{}
	for i := 0; i < 200 && (i < 5 || work.OwnReads.Load() == 0); i++ { // see TestClose_DuringLentRead
		v := fmt.Sprintf("warm%d", i)
		if _, err := p.Send(bg, &kpush.Record{Topic: topic, Key: []byte("a"), Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
		warm = append(warm, v)
	}
	if work.OwnReads.Load() == 0 {
		t.Fatal("no lent reads while warming up")
	}
	arm, held, release := holdNextProduce(t, c)
	arm()
	own0 := work.OwnReads.Load()
	aDone := make(chan error, 1)
	go func() {
		_, err := p.Send(bg, &kpush.Record{Topic: topic, Key: []byte("a"), Value: []byte("held")})
		aDone <- err
	}()
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the broker never got the held request")
	}
	const senders, each = 4, 30
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := bg
			if g%2 == 1 {
				ctx = testCtx(t)
			}
			for i := range each {
				if _, err := p.Send(ctx, &kpush.Record{Topic: topic, Key: []byte{'k', byte('0' + g)}, Value: fmt.Appendf(nil, "%d", i)}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	// The joiners' first records wait behind the held request.
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().InflightRequests < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if p.Stats().InflightRequests < 2 {
		t.Fatal("no request was written behind the held one")
	}
	release()
	if err := <-aDone; err != nil {
		t.Fatalf("the held Send: %v", err)
	}
	if work.OwnReads.Load() == own0 {
		t.Fatal("the held Send did not read its own response")
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("own reads %d, misses %d, loop writes %d", work.OwnReads.Load(), work.OwnReadMisses.Load(), work.LoopWrites.Load())
	want := map[string][]string{"a": append(warm, "held")}
	for g := range senders {
		for i := range each {
			k := string([]byte{'k', byte('0' + g)})
			want[k] = append(want[k], fmt.Sprint(i))
		}
	}
	checkOnceInOrder(t, c, topic, want)
	// Lending resumes once the burst is over (after up to 64 skipped
	// chances: the back-off after the burst's unused lends).
	own := work.OwnReads.Load()
	for i := 0; i < 200 && work.OwnReads.Load() == own; i++ {
		if _, err := p.Send(bg, &kpush.Record{Topic: topic, Key: []byte("a"), Value: fmt.Appendf(nil, "after%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if work.OwnReads.Load() == own {
		t.Fatal("no Send read its own response after the burst")
	}
}

// TestClose_DuringLentRead: Close while a Send waits in its lent read for
// a response the broker holds: the connection's close ends the read, the
// Send gets its one outcome (unknown: the request was written) and Close
// returns.
func TestClose_DuringLentRead(t *testing.T) {
	const topic = "own-read-close"
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic(topic, 1))
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	work := p.CountSinkWork()
	bg := context.Background()
	// Warm up until a Send has read its own response: on a loaded machine
	// the first lends can go unused (then the reader skips a few).
	for i := 0; i < 200 && (i < 5 || work.OwnReads.Load() == 0); i++ {
		if _, err := p.Send(bg, &kpush.Record{Topic: topic, Value: []byte("warm")}); err != nil {
			t.Fatal(err)
		}
	}
	if work.OwnReads.Load() == 0 {
		t.Fatal("no lent reads before the held one (the test would not exercise them)")
	}
	arm, held, _ := holdNextProduce(t, c)
	arm()
	sendDone := make(chan error, 1)
	go func() {
		_, err := p.Send(bg, &kpush.Record{Topic: topic, Value: []byte("held")})
		sendDone <- err
	}()
	<-held
	time.Sleep(20 * time.Millisecond) // the Send is in its read
	ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
	defer cancel()
	closeDone := make(chan error, 1)
	go func() { closeDone <- p.Close(ctx) }()
	select {
	case err := <-sendDone:
		if !errors.Is(err, kpush.ErrOutcomeUnknown) {
			t.Fatalf("held Send: %v, want ErrOutcomeUnknown", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the Send in its lent read never returned after Close")
	}
	select {
	case err := <-closeDone:
		if !errors.Is(err, kpush.ErrOutcomeUnknown) {
			t.Fatalf("Close: %v, want ErrOutcomeUnknown (its ctx ended with a record in flight)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close never returned")
	}
	if work.OwnReadMisses.Load() == 0 {
		t.Fatal("the held Send's lent read was not cut short (it did not read its own response)")
	}
}
