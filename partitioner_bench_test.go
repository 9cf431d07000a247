package kpush_test

// BenchmarkSend_KeylessSlowBroker: keyless SendAsync traffic on a 3-broker
// fake cluster whose broker 0 (leading 2 of 6 partitions) answers produce
// requests at a limited bandwidth, with the adaptive default partitioner
// and with the uniform sticky one, in alternating rounds. The clusters run
// in this process, so only the records/s ratio between the two within one
// run means anything (no CPU figures):
//
//	go test -run '^$' -bench KeylessSlowBroker -benchtime 300000x .

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

// slowBrokerProducer returns a producer using part on a fresh 3-broker
// cluster whose broker 0 leads partitions 0 and 3 of topic "slowbw" and
// answers at slowBandwidth.
func slowBrokerProducer(b *testing.B, part kpush.Partitioner) *kpush.Producer {
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
		c.SleepControl(func() { time.Sleep(d) })
		return nil, nil, false
	})
	// A 4 MiB buffer: once the slow broker's partitions fill it, every
	// sender waits for that broker.
	return newProducer(b, c, kpush.WithPartitioner(part), kpush.WithMaxBufferedBytes(4<<20))
}

// sendKeyless sends n keyless records asynchronously and waits for every
// outcome, returning how long that took.
func sendKeyless(ctx context.Context, b *testing.B, p *kpush.Producer, n int) time.Duration {
	done := make(chan error, 1024)
	value := make([]byte, 100)
	start := time.Now()
	go func() {
		for range n {
			p.SendAsync(ctx, &kpush.Record{Topic: "slowbw", Value: value}, func(_ kpush.Result, err error) { done <- err })
		}
	}()
	errs := 0
	for range n {
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
	if errs > 0 {
		b.Fatalf("%d records failed", errs)
	}
	return el
}

// BenchmarkSend_KeylessSlowBroker alternates rounds of b.N/3 records on the
// adaptive default and on the uniform sticky partitioner (each with its
// own cluster) and reports both rates and adaptive÷uniform.
func BenchmarkSend_KeylessSlowBroker(b *testing.B) {
	const rounds = 3
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	adaptive := slowBrokerProducer(b, kpush.StickyPartitioner)
	uniform := slowBrokerProducer(b, kpush.UniformStickyPartitioner)
	for _, p := range []*kpush.Producer{adaptive, uniform} {
		// Warm up: metadata and connections.
		if _, err := p.Send(ctx, &kpush.Record{Topic: "slowbw", Value: []byte("warm")}); err != nil {
			b.Fatal(err)
		}
	}
	per := max(b.N/rounds, 1)
	var ta, tu time.Duration
	b.ResetTimer()
	for range rounds {
		ta += sendKeyless(ctx, b, adaptive, per)
		tu += sendKeyless(ctx, b, uniform, per)
	}
	b.StopTimer()
	ra := float64(per*rounds) / ta.Seconds()
	ru := float64(per*rounds) / tu.Seconds()
	b.ReportMetric(ra, "adaptive-records/s")
	b.ReportMetric(ru, "uniform-records/s")
	b.ReportMetric(ra/ru, "adaptive/uniform")
}
