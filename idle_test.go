package kpush_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// msgHandler is a slog.Handler that reports every record whose message is
// msg on ch (and drops the rest).
type msgHandler struct {
	msg string
	ch  chan<- slog.Record
}

func (h msgHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h msgHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		select {
		case h.ch <- r:
		default:
		}
	}
	return nil
}
func (h msgHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h msgHandler) WithGroup(string) slog.Handler      { return h }

// TestSend_IdleConnectionsClosedFirst: kpush closes connections idle for
// WithConnMaxIdle itself (before the broker's connections.max.idle.ms
// could close one under a new request), and the next record dials again
// and is delivered with no retry and no failure.
func TestSend_IdleConnectionsClosedFirst(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("idle", 1))
	var dials atomic.Int32 // every connection starts with ApiVersions
	f := c.Fake()
	f.ControlKey(int16(kmsg.ApiVersions), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		dials.Add(1)
		return nil, nil, false
	})
	closes := make(chan slog.Record, 16)
	p := newProducer(t, c, kpush.WithConnMaxIdle(50*time.Millisecond),
		kpush.WithLogger(slog.New(msgHandler{msg: "kpush: closed idle broker connection", ch: closes})))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "idle", Value: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	// Both connections (metadata and produce) go idle and are closed.
	for i := range 2 {
		select {
		case <-closes:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of 2 idle connections closed by kpush", i)
		}
	}
	before := dials.Load()
	res, err := p.Send(ctx, &kpush.Record{Topic: "idle", Value: []byte("after")})
	if err != nil {
		t.Fatalf("Send after the idle close: %v", err)
	}
	if res.Offset != 1 {
		t.Errorf("offset %d, want 1", res.Offset)
	}
	if dials.Load() <= before {
		t.Errorf("no new connection after the idle close")
	}
	if s := p.Stats(); s.Retries != 0 || s.RecordsFailed != 0 {
		t.Errorf("Retries = %d, RecordsFailed = %d; an idle close must affect no record", s.Retries, s.RecordsFailed)
	}
}

// TestNew_NegativeConnMaxIdle: a negative idle time is a *ConfigError
// naming WithConnMaxIdle.
func TestNew_NegativeConnMaxIdle(t *testing.T) {
	_, err := kpush.New(kpush.WithBrokers("127.0.0.1:1"), kpush.WithConnMaxIdle(-time.Second))
	var ce *kpush.ConfigError
	if !errors.As(err, &ce) || ce.Option != "WithConnMaxIdle" || !errors.Is(err, kpush.ErrInvalidConfig) {
		t.Fatalf("New = %v; want a *ConfigError for WithConnMaxIdle", err)
	}
}
