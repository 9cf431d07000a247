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
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("reuse", 1),
		kafkatest.WithKfakeOptions(kfake.BrokerConfigs(map[string]string{"message.max.bytes": "4000"})))
	p := newProducer(t, c, kpush.WithMaxInflight(1))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "reuse", Value: []byte("0")}); err != nil {
		t.Fatal(err) // metadata and producer ID loaded
	}

	// Produce request 1 (one record) is held until release1, request 2 (the
	// big batch) until release2; later ones pass.
	release1, release2, second := holdFirstTwoProduces(c)
	first := make(chan error, 1)
	p.SendAsync(ctx, &kpush.Record{Topic: "reuse", Value: []byte("1")}, func(_ kpush.Result, err error) { first <- err })
	waitFor(t, func() bool { return p.Stats().InflightRequests == 1 })

	// Records 2..n wait behind request 1 (one request in flight), then go
	// out together in request 2: too large for the topic, so it splits.
	const n = 21
	vals := make([][]byte, n+1)
	keys := make([][]byte, n+1)
	hdrs := make([][]byte, n+1)
	sendCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, n+1)
	var wg sync.WaitGroup
	for i := 2; i <= n; i++ {
		vals[i] = bytes.Repeat([]byte{byte('a' + i%26)}, 300)
		copy(vals[i], fmt.Sprintf("%d:", i))
		keys[i] = []byte(fmt.Sprintf("key-%d", i))
		hdrs[i] = []byte(fmt.Sprintf("hdr-%d", i))
		rec := &kpush.Record{Topic: "reuse", Key: keys[i], Value: vals[i],
			Headers: []kpush.Header{{Key: "h", Value: hdrs[i]}}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = p.Send(sendCtx, rec)
		}()
	}
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
	cancel() // every Send of request 2 gives up: outcome unknown
	wg.Wait()
	for i := 2; i <= n; i++ {
		if !errors.Is(errs[i], kpush.ErrOutcomeUnknown) || !errors.Is(errs[i], context.Canceled) {
			t.Fatalf("record %d: %v, want outcome unknown (context canceled)", i, errs[i])
		}
		// The caller owns the memory again: reuse it.
		for _, b := range [][]byte{vals[i], keys[i], hdrs[i]} {
			for j := range b {
				b[j] = 0xFF
			}
		}
	}
	close(release2)
	flushCtx, cancelFlush := context.WithTimeout(ctx, 20*time.Second)
	defer cancelFlush()
	if err := p.Flush(flushCtx); err != nil {
		t.Fatal(err)
	}
	got, err := c.ReadAll(ctx, "reuse")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n+1 {
		t.Fatalf("read %d records, want %d", len(got), n+1)
	}
	want := make(map[string]string) // key → value+header, as first given
	for i := 2; i <= n; i++ {
		v := bytes.Repeat([]byte{byte('a' + i%26)}, 300)
		copy(v, fmt.Sprintf("%d:", i))
		want[fmt.Sprintf("key-%d", i)] = string(v) + "|" + fmt.Sprintf("hdr-%d", i)
	}
	for _, r := range got[2:] { // Sends race each other: any order
		h := ""
		if len(r.Headers) == 1 {
			h = string(r.Headers[0].Value)
		}
		w, ok := want[string(r.Key)]
		if !ok || w != string(r.Value)+"|"+h {
			t.Fatalf("offset %d holds key %.8x value %.8x… header %.8x: the caller's memory was read after Send returned", r.Offset, r.Key, r.Value, h)
		}
		delete(want, string(r.Key))
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
			f.SleepControl(func() { <-release1 })
		case 2:
			close(second)
			f.SleepControl(func() { <-release2 })
		}
		return nil, nil, false
	})
	return release1, release2, second
}
