package kpush_test

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/internal/wire"
)

// BenchmarkSendC1Wait is BenchmarkSend at C=1 with the two ways a Send
// reading its own response can wait for it (internal/wire/ownwait.go):
// parked in Go's network poller (wait=netpoll) or blocked in ppoll
// (wait=poll, Linux only), and franz-go for the ratio, one after the
// other per -count round (docs/internals-c1.md):
//
//	go test -run '^$' -bench 'SendC1Wait' -benchtime 20000x -count 5 -benchmem .
func BenchmarkSendC1Wait(b *testing.B) {
	for _, tc := range []struct {
		name string
		poll bool
	}{{"wait=netpoll", false}, {"wait=poll", true}} {
		b.Run(tc.name, func(b *testing.B) {
			if tc.poll && !wire.PollWaitSupported {
				b.Skip("no poll waits on this platform")
			}
			was := wire.SetPollWait(tc.poll)
			defer wire.SetPollWait(was)
			p := newBenchProducer(b)
			runConcurrent(b, 1, func(ctx context.Context, v []byte) error {
				_, err := p.Send(ctx, &kpush.Record{Topic: benchTopic, Value: v})
				return err
			})
		})
	}
	b.Run("client=franz-go", func(b *testing.B) {
		cl := newBenchKgo(b)
		runConcurrent(b, 1, func(ctx context.Context, v []byte) error {
			return cl.ProduceSync(ctx, &kgo.Record{Topic: benchTopic, Value: v}).FirstErr()
		})
	})
}
