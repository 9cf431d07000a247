package kpush_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	release1, release2, second := holdFirstTwoProduces(c)
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

// sendingHandler is a slog.Handler that, like a handler shipping logs to
// Kafka through the producer itself, sends a record from inside Handle
// when it sees msg.
type sendingHandler struct {
	msg  string
	p    atomic.Pointer[kpush.Producer]
	once sync.Once
	sent chan error // the sent record's outcome
}

func (h *sendingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *sendingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *sendingHandler) WithGroup(string) slog.Handler            { return h }
func (h *sendingHandler) Handle(_ context.Context, r slog.Record) error {
	p := h.p.Load()
	if p == nil || r.Message != h.msg {
		return nil
	}
	h.once.Do(func() {
		p.SendAsync(context.Background(), &kpush.Record{Topic: "logs", Value: []byte(r.Message)},
			func(_ kpush.Result, err error) { h.sent <- err })
	})
	return nil
}

// TestLogger_RetryLogRunsUnlocked: the logger is user code, so it must not
// run under a kpush lock. The "retrying batch" message was logged with the
// partition's lock held on the reader goroutine: a handler that sent a
// record to that partition (logs shipped to Kafka by the same producer)
// deadlocked the partition and the reader.
func TestLogger_RetryLogRunsUnlocked(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("logs", 1))
	h := &sendingHandler{msg: "kpush: retrying batch", sent: make(chan error, 1)}
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...), kpush.WithLogger(slog.New(h)),
		kpush.WithRetryBackoff(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		p.Close(ctx)
	}()
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "logs", Value: []byte("warmup")}); err != nil {
		t.Fatal(err)
	}
	f := c.Fake()
	rejected := false // only touched on the cluster's goroutine
	f.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		if rejected {
			return nil, nil, false
		}
		rejected = true
		return rejectProduce(req.(*kmsg.ProduceRequest), kerr.NotEnoughReplicas, 0), nil, true
	})
	h.p.Store(p)
	first := make(chan error, 1)
	p.SendAsync(ctx, &kpush.Record{Topic: "logs", Value: []byte("retried")}, func(_ kpush.Result, err error) { first <- err })
	deadline := time.After(10 * time.Second)
	for _, ch := range []chan error{first, h.sent} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatal("no outcome within 10 s: the logger's Send deadlocked on a lock the engine held while logging")
		}
	}
}
