package kpush_test

// BenchmarkSend_KeylessSlowBroker: keyless SendAsync traffic on a 3-broker
// fake cluster whose broker 0 (leading 2 of 6 partitions) answers produce
// requests at a limited bandwidth, with the adaptive default partitioner
// and with the uniform sticky one. The cluster runs in this process, so
// only the records/s ratio between the two sub-benchmarks of one run means
// anything (no CPU figures); -count interleaves them:
//
//	go test -run '^$' -bench KeylessSlowBroker -benchtime 100000x -count 3 .

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// slowBandwidth is broker 0's simulated bandwidth: a produce request of b
// record bytes is answered b/slowBandwidth seconds late.
const slowBandwidth = 2 << 20 // bytes per second

func BenchmarkSend_KeylessSlowBroker(b *testing.B) {
	for _, bc := range []struct {
		name string
		part kpush.Partitioner
	}{
		{"adaptive", kpush.StickyPartitioner},
		{"uniform", kpush.UniformStickyPartitioner},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := kafkatest.NewTestCluster(b, kafkatest.WithBrokers(3), kafkatest.WithTopic("slowbw", 6))
			f := c.Fake()
			for i := range int32(6) {
				if err := f.MoveTopicPartition("slowbw", i, i%3); err != nil {
					b.Fatal(err)
				}
			}
			f.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
				f.KeepControl()
				if f.CurrentNode() != 0 {
					return nil, nil, false
				}
				n := 0
				for _, t := range req.(*kmsg.ProduceRequest).Topics {
					for _, p := range t.Partitions {
						n += len(p.Records)
					}
				}
				// The broker's own slowness, not test synchronization:
				// SleepControl lets the other brokers answer meanwhile.
				d := time.Duration(int64(n) * int64(time.Second) / slowBandwidth)
				f.SleepControl(func() { time.Sleep(d) })
				return nil, nil, false
			})
			// A 4 MiB buffer: once the slow broker's partitions fill it,
			// every sender waits for that broker.
			p := newProducer(b, c, kpush.WithPartitioner(bc.part), kpush.WithMaxBufferedBytes(4<<20))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			// Warm up: metadata and connections.
			if _, err := p.Send(ctx, &kpush.Record{Topic: "slowbw", Value: []byte("warm")}); err != nil {
				b.Fatal(err)
			}
			done := make(chan error, 1024)
			value := make([]byte, 100)
			errs := 0
			b.ResetTimer()
			start := time.Now()
			go func() {
				for range b.N {
					p.SendAsync(ctx, &kpush.Record{Topic: "slowbw", Value: value}, func(_ kpush.Result, err error) { done <- err })
				}
			}()
			for range b.N {
				select {
				case err := <-done:
					if err != nil {
						errs++
					}
				case <-ctx.Done():
					b.Fatal(ctx.Err())
				}
			}
			el := time.Since(start)
			b.StopTimer()
			if errs > 0 {
				b.Fatalf("%d records failed", errs)
			}
			b.ReportMetric(float64(b.N)/el.Seconds(), "records/s")
		})
	}
}
