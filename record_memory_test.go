package kpush_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestSend_AbandonedRecordMemoryNotReadAgain: a Send whose ctx ends while
// its record is in flight returns ErrOutcomeUnknown, and from then on the
// caller owns the record's memory again. Here the caller overwrites it at
// once, and the batch then comes back MESSAGE_TOO_LARGE, so kpush splits
// and encodes it again: what reaches the log must be the bytes the caller
// gave, never the overwritten ones.
func TestSend_AbandonedRecordMemoryNotReadAgain(t *testing.T) {
	var (
		cancel context.CancelFunc
		wg     sync.WaitGroup
		errs   []error
	)
	testMemoryReuse(t, "reuse", "Send returned", func(ctx context.Context, p *kpush.Producer, recs []*kpush.Record) {
		var sendCtx context.Context
		sendCtx, cancel = context.WithCancel(ctx)
		t.Cleanup(cancel)
		errs = make([]error, len(recs))
		for i, rec := range recs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = p.Send(sendCtx, rec)
			}()
		}
	}, func(recs []*kpush.Record) []error {
		cancel() // every Send of request 2 gives up: outcome unknown
		wg.Wait()
		for _, rec := range recs {
			overwrite(rec) // the caller owns the memory again: reuse it
		}
		return errs
	})
}

// memoryReuseN is the number of the last record a memory-reuse test sends.
const memoryReuseN = 21

// testMemoryReuse runs the scenario of the memory-reuse tests on topic (a
// topic's message.max.bytes of 4000, one request in flight): produce
// request 1 (one record) is held; records 2..memoryReuseN, handed to send,
// wait behind it and then go out together in request 2, which is held
// too; abandon ends them all while request 2 is in flight, overwriting
// each record's memory once its outcome is given, and returns their
// errors, which must be outcome unknown (context canceled). Request 2 then
// comes back MESSAGE_TOO_LARGE and is split and encoded again: the log
// must hold the bytes first given (when says when the caller took its
// memory back, for the failure message).
func testMemoryReuse(t *testing.T, topic, when string,
	send func(ctx context.Context, p *kpush.Producer, recs []*kpush.Record),
	abandon func(recs []*kpush.Record) []error) {
	t.Helper()
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic(topic, 1),
		kafkatest.WithKfakeOptions(kfake.BrokerConfigs(map[string]string{"message.max.bytes": "4000"})))
	p := newProducer(t, c, kpush.WithMaxInflight(1))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: topic, Value: []byte("0")}); err != nil {
		t.Fatal(err) // metadata and producer ID loaded
	}
	release1, release2, second := holdFirstTwoProduces(c)
	first := make(chan error, 1)
	p.SendAsync(ctx, &kpush.Record{Topic: topic, Value: []byte("1")}, func(_ kpush.Result, err error) { first <- err })
	waitFor(t, func() bool { return p.Stats().InflightRequests == 1 })

	// Records 2..n wait behind request 1 (one request in flight), then go
	// out together in request 2: too large for the topic, so it splits.
	const n = memoryReuseN
	var recs []*kpush.Record
	for i := 2; i <= n; i++ {
		recs = append(recs, &kpush.Record{Topic: topic, Key: []byte(fmt.Sprintf("key-%d", i)), Value: reuseValue(i),
			Headers: []kpush.Header{{Key: "h", Value: []byte(fmt.Sprintf("hdr-%d", i))}}})
	}
	send(ctx, p, recs)
	waitFor(t, func() bool { return p.Stats().RecordsBuffered == n })
	close(release1)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	select {
	case <-second:
	case <-ctx.Done():
		t.Fatal("request 2 never came")
	}
	for i, err := range abandon(recs) {
		if !errors.Is(err, kpush.ErrOutcomeUnknown) || !errors.Is(err, context.Canceled) {
			t.Fatalf("record %d: %v, want outcome unknown (context canceled)", i+2, err)
		}
	}
	close(release2)
	flushCtx, cancelFlush := context.WithTimeout(ctx, 20*time.Second)
	defer cancelFlush()
	if err := p.Flush(flushCtx); err != nil {
		t.Fatal(err)
	}
	got, err := c.ReadAll(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n+1 {
		t.Fatalf("read %d records, want %d", len(got), n+1)
	}
	want := make(map[string]string) // key → value+header, as first given
	for i := 2; i <= n; i++ {
		want[fmt.Sprintf("key-%d", i)] = string(reuseValue(i)) + "|" + fmt.Sprintf("hdr-%d", i)
	}
	for _, r := range got[2:] { // records of request 2 may be in any order
		h := ""
		if len(r.Headers) == 1 {
			h = string(r.Headers[0].Value)
		}
		w, ok := want[string(r.Key)]
		if !ok || w != string(r.Value)+"|"+h {
			t.Fatalf("offset %d holds key %.8x value %.8x… header %.8x: the caller's memory was read after %s", r.Offset, r.Key, r.Value, h, when)
		}
		delete(want, string(r.Key))
	}
}

// reuseValue is record i's value in a memory-reuse test.
func reuseValue(i int) []byte {
	v := bytes.Repeat([]byte{byte('a' + i%26)}, 300)
	copy(v, fmt.Sprintf("%d:", i))
	return v
}

// overwrite fills rec's key, value and header values with 0xFF, as a
// caller reusing its buffers would.
func overwrite(rec *kpush.Record) {
	bufs := [][]byte{rec.Key, rec.Value}
	for _, h := range rec.Headers {
		bufs = append(bufs, h.Value)
	}
	for _, b := range bufs {
		for j := range b {
			b[j] = 0xFF
		}
	}
}

// holdFirstTwoProduces holds the cluster's next produce request until
// release1 is closed and the one after it until release2 is closed (second
// is closed when that one arrives); later requests pass.
func holdFirstTwoProduces(c *kafkatest.Cluster) (release1, release2, second chan struct{}) {
	release1, release2, second = make(chan struct{}), make(chan struct{}), make(chan struct{})
	f := c.Fake()
	reqs := 0 // only touched on the cluster's goroutine
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		reqs++
		switch reqs {
		case 1:
			f.KeepControl()
			c.SleepControl(func() { <-release1 })
		case 2:
			close(second)
			c.SleepControl(func() { <-release2 })
		}
		return nil, nil, false
	})
	return release1, release2, second
}
