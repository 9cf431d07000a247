package kpush_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestRecordTooLarge_CarriesSizeAndLimit: the failure says how large the
// record is and what the limit is, and still matches ErrRecordTooLarge.
func TestRecordTooLarge_CarriesSizeAndLimit(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	for _, tc := range []struct {
		name   string
		opts   []kpush.Option
		option string
		limit  int64
	}{
		{"batch", []kpush.Option{kpush.WithMaxBatchBytes(4096)}, "WithMaxBatchBytes", 4096 - 61},
		{"buffer", []kpush.Option{kpush.WithMaxBufferedBytes(2048)}, "WithMaxBufferedBytes", 2048},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := kpush.New(append(tc.opts, kpush.WithBrokers(c.Addrs()...))...)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close(context.Background())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = p.Send(ctx, &kpush.Record{Topic: "t", Value: make([]byte, 5000)})
			var tl *kpush.RecordTooLargeError
			if !errors.Is(err, kpush.ErrRecordTooLarge) || !errors.As(err, &tl) {
				t.Fatalf("err = %v, want a *RecordTooLargeError matching ErrRecordTooLarge", err)
			}
			if tl.Size < 5000 || tl.Size > 5100 || tl.Limit != tc.limit || tl.Option != tc.option {
				t.Fatalf("got %+v, want size about 5000, limit %d, option %s", *tl, tc.limit, tc.option)
			}
		})
	}
}
