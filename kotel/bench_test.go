package kotel_test

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
	"github.com/kpush/kpush/kotel"
)

// BenchmarkSend_Kotel: C=1000 goroutines each Send one 100-byte record
// and wait, with no instrumentation and with each part of kotel, on the
// in-process fake cluster. It reports records/s, allocations and the
// process's CPU per record (the fake broker's included, so compare each
// case with "none" of the same run); the cost table in
// docs/observability.md is taken from it.
func BenchmarkSend_Kotel(b *testing.B) {
	c, err := kafkatest.NewCluster(kafkatest.WithTopic("bench", 6))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	// The span processor a program would use, exporting nowhere.
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sdktrace.NewBatchSpanProcessor(discard{})))
	defer tp.Shutdown(context.Background())
	for _, bc := range []struct {
		name string
		opts []kotel.Option // nil: no kotel at all
	}{
		{"none", nil},
		{"metrics", []kotel.Option{kotel.WithTracing(false)}},
		{"tracing", []kotel.Option{kotel.WithMetrics(false)}},
		{"tracing+inject", []kotel.Option{kotel.WithMetrics(false), kotel.WithInjectTraceContext(true)}},
		{"all", []kotel.Option{kotel.WithInjectTraceContext(true)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			opts := []kpush.Option{kpush.WithBrokers(c.Addrs()...)}
			if bc.opts != nil {
				k, err := kotel.New(append([]kotel.Option{kotel.WithMeterProvider(mp), kotel.WithTracerProvider(tp),
					kotel.WithPropagator(propagation.TraceContext{})}, bc.opts...)...)
				if err != nil {
					b.Fatal(err)
				}
				opts = append(opts, kpush.WithHooks(k.Hooks()...))
			}
			p, err := kpush.New(opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close(context.Background())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			value := make([]byte, 100)
			if _, err := p.Send(ctx, &kpush.Record{Topic: "bench", Value: value}); err != nil {
				b.Fatal(err)
			}
			const conc = 1000
			b.ReportAllocs()
			b.ResetTimer()
			start, cpu0 := time.Now(), cpuTime()
			var wg sync.WaitGroup
			for g := range conc {
				n := b.N / conc
				if g < b.N%conc {
					n++
				}
				wg.Go(func() {
					for range n {
						if _, err := p.Send(ctx, &kpush.Record{Topic: "bench", Value: value}); err != nil {
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

// discard is a span exporter that drops everything.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }
