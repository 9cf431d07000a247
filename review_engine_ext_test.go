package kpush_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestSendCancelable_CanceledInflightMemoryNotReadAgain is
// TestSend_AbandonedRecordMemoryNotReadAgain for SendHandle.Cancel: handles
// canceled while their batch is in flight get ErrOutcomeUnknown in their
// callback, which overwrites the record's memory at once; the batch then
// comes back MESSAGE_TOO_LARGE and is split and encoded again, and the log
// must hold the bytes first given.
func TestSendCancelable_CanceledInflightMemoryNotReadAgain(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("hreuse", 1),
		kafkatest.WithKfakeOptions(kfake.BrokerConfigs(map[string]string{"message.max.bytes": "4000"})))
	p := newProducer(t, c, kpush.WithMaxInflight(1))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "hreuse", Value: []byte("0")}); err != nil {
		t.Fatal(err)
	}
	release1, release2 := make(chan struct{}), make(chan struct{})
	second := make(chan struct{})
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
	first := make(chan error, 1)
	p.SendAsync(ctx, &kpush.Record{Topic: "hreuse", Value: []byte("1")}, func(_ kpush.Result, err error) { first <- err })
	waitFor(t, func() bool { return p.Stats().InflightRequests == 1 })

	const n = 21
	errs := make(chan error, n)
	var hs []*kpush.SendHandle
	for i := 2; i <= n; i++ {
		val := bytes.Repeat([]byte{byte('a' + i%26)}, 300)
		copy(val, fmt.Sprintf("%d:", i))
		key := []byte(fmt.Sprintf("key-%d", i))
		hdr := []byte(fmt.Sprintf("hdr-%d", i))
		rec := &kpush.Record{Topic: "hreuse", Key: key, Value: val, Headers: []kpush.Header{{Key: "h", Value: hdr}}}
		hs = append(hs, p.SendCancelable(ctx, rec, func(_ kpush.Result, err error) {
			// The outcome is given: the caller owns the memory again.
			for _, b := range [][]byte{val, key, hdr} {
				for j := range b {
					b[j] = 0xFF
				}
			}
			errs <- err
		}))
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
	for _, h := range hs {
		h.Cancel()
	}
	for i := 2; i <= n; i++ {
		if err := <-errs; !errors.Is(err, kpush.ErrOutcomeUnknown) || !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled handle: %v, want outcome unknown (context canceled)", err)
		}
	}
	close(release2)
	flushCtx, cancelFlush := context.WithTimeout(ctx, 20*time.Second)
	defer cancelFlush()
	if err := p.Flush(flushCtx); err != nil {
		t.Fatal(err)
	}
	got, err := c.ReadAll(ctx, "hreuse")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n+1 {
		t.Fatalf("read %d records, want %d", len(got), n+1)
	}
	for _, r := range got[2:] {
		var i int
		if _, err := fmt.Sscanf(string(r.Key), "key-%d", &i); err != nil {
			t.Fatalf("offset %d holds key %.8x: the caller's memory was read after the callback", r.Offset, r.Key)
		}
		v := bytes.Repeat([]byte{byte('a' + i%26)}, 300)
		copy(v, fmt.Sprintf("%d:", i))
		if !bytes.Equal(r.Value, v) || len(r.Headers) != 1 || string(r.Headers[0].Value) != fmt.Sprintf("hdr-%d", i) {
			t.Fatalf("offset %d (key %s) holds value %.8x…: the caller's memory was read after the callback", r.Offset, r.Key, r.Value)
		}
	}
}
