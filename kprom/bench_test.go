package kprom_test

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
	"github.com/kpush/kpush/kprom"
)

// BenchmarkSend_Kprom: C=1000 goroutines each Send one 100-byte record and
// wait, without hooks and with the collector installed (registered, not
// scraped), on the in-process fake cluster. It reports records/s,
// allocations and the process's CPU per record (the fake broker's
// included: compare "kprom" with "none" of the same run). The cost table
// in docs/observability.md is taken from it:
//
//	cd kprom && go test -run '^$' -bench BenchmarkSend_Kprom -benchtime 100000x -benchmem -count 5 .
func BenchmarkSend_Kprom(b *testing.B) {
	c, err := kafkatest.NewCluster(kafkatest.WithTopic("bench", 6))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, withKprom := range []bool{false, true} {
		name := "none"
		opts := []kpush.Option{kpush.WithBrokers(c.Addrs()...)}
		if withKprom {
			name = "kprom"
			m := kprom.New()
			prometheus.NewRegistry().MustRegister(m)
			opts = append(opts, kpush.WithHooks(m))
		}
		b.Run(name, func(b *testing.B) {
			p, err := kpush.New(opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close(context.Background())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			value := make([]byte, 100)
			send := func() error {
				_, err := p.Send(ctx, &kpush.Record{Topic: "bench", Value: value})
				return err
			}
			if err := send(); err != nil { // metadata, connection, producer id
				b.Fatal(err)
			}
			const conc = 1000
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			start, cpu0 := time.Now(), cpuTime()
			for g := range conc {
				wg.Go(func() {
					for i := g; i < b.N; i += conc {
						if err := send(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/1e3/float64(b.N), "cpu-µs/record")
		})
	}
}

// cpuTime is the process's CPU time (user and system) so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMetrics_OnRecordDone: the collector's cost per record outcome
// alone (acknowledged records of one topic, from all CPUs), without a
// producer or broker.
func BenchmarkMetrics_OnRecordDone(b *testing.B) {
	m := kprom.New()
	prometheus.NewRegistry().MustRegister(m)
	ev := kpush.RecordDoneEvent{Topic: "bench", Partition: 3, Bytes: 170, Elapsed: 2 * time.Millisecond}
	m.OnRecordDone(ev)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.OnRecordDone(ev)
		}
	})
}
