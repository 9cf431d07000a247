package kpush_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
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
	errs := make(chan error, memoryReuseN)
	var hs []*kpush.SendHandle
	testMemoryReuse(t, "hreuse", "the callback", func(ctx context.Context, p *kpush.Producer, recs []*kpush.Record) {
		for _, rec := range recs {
			hs = append(hs, p.SendCancelable(ctx, rec, func(_ kpush.Result, err error) {
				overwrite(rec) // the outcome is given: the caller owns the memory again
				errs <- err
			}))
		}
	}, func(recs []*kpush.Record) []error {
		for _, h := range hs {
			h.Cancel()
		}
		out := make([]error, len(recs))
		for i := range out {
			out[i] = <-errs
		}
		return out
	})
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
