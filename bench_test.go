package kpush_test

// Benchmarks of the seed workload: C goroutines each send one record and
// wait. The broker runs in a separate process (this test binary,
// re-executed with KPUSH_BENCH_BROKER=1) so that its CPU is not counted;
// each benchmark reports the client's process CPU per record from rusage.
// franz-go's kgo runs the same workload against the same broker in the same
// run, so ratios between the two are meaningful even on a noisy machine:
//
//	go test -run '^$' -bench 'Send' -benchtime 200000x .

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpush/kpush"
)

const (
	benchTopic      = "bench"
	benchPartitions = 12
	benchValueSize  = 100
)

func TestMain(m *testing.M) {
	if os.Getenv("KPUSH_BENCH_BROKER") == "1" {
		runBenchBroker()
		return
	}
	code := m.Run()
	if err := writeReliabilityReport(); err != nil {
		fmt.Fprintln(os.Stderr, "reliability report:", err)
		code = 1
	}
	os.Exit(code)
}

// runBenchBroker serves a fake cluster until stdin closes (the parent exits).
func runBenchBroker() {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(benchPartitions, benchTopic),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, "127.0.0.1:0") }))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	fmt.Println(strings.Join(c.ListenAddrs(), ","))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	done := make(chan struct{})
	go func() {
		bufio.NewReader(os.Stdin).ReadString('\n') // EOF when the parent dies
		close(done)
	}()
	select {
	case <-done:
	case <-sig:
	}
}

// brokerAddrs starts a fresh broker process for this (sub-)benchmark and
// stops it in cleanup: the fake broker keeps every record in memory, so a
// shared one would slow down whichever client runs later.
func brokerAddrs(b testing.TB) []string {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "KPUSH_BENCH_BROKER=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe() // the broker exits when this closes
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatalf("broker process: %v", err)
	}
	return strings.Split(strings.TrimSpace(line), ",")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runConcurrent runs b.N sends over c goroutines and reports the metrics.
func runConcurrent(b *testing.B, c int, send func(ctx context.Context, value []byte) error) {
	ctx := context.Background()
	value := make([]byte, benchValueSize)
	// Warm up: connections, metadata, producer id, pools.
	for range min(c, 100) * 2 {
		if err := send(ctx, value); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]int64, b.N)
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, t0 := cpuTime(), time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				start := time.Now()
				if err := send(ctx, value); err != nil {
					failed.Add(1)
				}
				lat[i] = int64(time.Since(start))
			}
		}()
	}
	wg.Wait()
	elapsed, cpu := time.Since(t0), cpuTime()-cpu0
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d sends failed", n)
	}
	reportLatency(b, lat, elapsed, cpu)
}

func reportLatency(b *testing.B, lat []int64, elapsed, cpu time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/record")
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2])/1e3, "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100])/1e3, "p99-µs")
	}
}

var benchConcurrency = []int{1, 100, 1000, 10000}

func newBenchProducer(b *testing.B) *kpush.Producer {
	p, err := kpush.New(kpush.WithBrokers(brokerAddrs(b)...)) // defaults, as the README's numbers
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close(context.Background()) })
	return p
}

func newBenchKgo(b *testing.B) *kgo.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokerAddrs(b)...), kgo.DefaultProduceTopic(benchTopic),
		kgo.ProducerBatchCompression(kgo.NoCompression())) // defaults but compression, which kpush does not default to either
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Close)
	return cl
}

// BenchmarkSend is the seed workload: C goroutines each Send one record and
// wait, kpush and franz-go's ProduceSync interleaved per C so both see the
// same machine state. Compare ratios within one run.
func BenchmarkSend(b *testing.B) {
	for _, c := range benchConcurrency {
		b.Run(fmt.Sprintf("C=%d/client=kpush", c), func(b *testing.B) {
			p := newBenchProducer(b)
			runConcurrent(b, c, func(ctx context.Context, v []byte) error {
				_, err := p.Send(ctx, &kpush.Record{Topic: benchTopic, Value: v})
				return err
			})
			reportBatches(b, p)
		})
		b.Run(fmt.Sprintf("C=%d/client=franz-go", c), func(b *testing.B) {
			cl := newBenchKgo(b)
			runConcurrent(b, c, func(ctx context.Context, v []byte) error {
				return cl.ProduceSync(ctx, &kgo.Record{Topic: benchTopic, Value: v}).FirstErr()
			})
		})
	}
}

func reportBatches(b *testing.B, p *kpush.Producer) {
	st := p.Stats()
	b.ReportMetric(st.AvgBatchRecords, "records/batch")
	if st.Requests > 0 {
		b.ReportMetric(float64(st.BatchedRecords)/float64(st.Requests), "records/request")
	}
}

// runAsync pipelines b.N records from one goroutine.
func runAsync(b *testing.B, send func(value []byte, done func(error))) {
	value := make([]byte, benchValueSize)
	var wg sync.WaitGroup
	var failed atomic.Int64
	done := func(err error) {
		if err != nil {
			failed.Add(1)
		}
		wg.Done()
	}
	wg.Add(1000)
	for range 1000 {
		send(value, done)
	}
	wg.Wait()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, t0 := cpuTime(), time.Now()
	wg.Add(b.N)
	for range b.N {
		send(value, done)
	}
	wg.Wait()
	elapsed, cpu := time.Since(t0), cpuTime()-cpu0
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d sends failed", n)
	}
	reportLatency(b, nil, elapsed, cpu)
}

// BenchmarkSendAsync pipelines records from one goroutine with callbacks:
// kpush's SendAsync and franz-go's Produce with a promise.
func BenchmarkSendAsync(b *testing.B) {
	ctx := context.Background()
	// Each client's callback is made once, not per record, so allocs/op
	// counts the client's allocations and not a closure of the harness.
	b.Run("client=kpush", func(b *testing.B) {
		p := newBenchProducer(b)
		var cb func(kpush.Result, error)
		runAsync(b, func(v []byte, done func(error)) {
			if cb == nil {
				cb = func(_ kpush.Result, err error) { done(err) }
			}
			p.SendAsync(ctx, &kpush.Record{Topic: benchTopic, Value: v}, cb)
		})
		reportBatches(b, p)
	})
	b.Run("client=franz-go", func(b *testing.B) {
		cl := newBenchKgo(b)
		var promise func(*kgo.Record, error)
		runAsync(b, func(v []byte, done func(error)) {
			if promise == nil {
				promise = func(_ *kgo.Record, err error) { done(err) }
			}
			cl.Produce(ctx, &kgo.Record{Topic: benchTopic, Value: v}, promise)
		})
	})
}
