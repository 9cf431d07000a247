package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// runSpec is one run: one client on one workload against one fresh
// broker. The parent passes it to both children as JSON.
type runSpec struct {
	Client     string   `json:"client"`
	Mode       string   `json:"mode"` // "sync" or "async"
	C          int      `json:"c"`    // sending goroutines (sync); 1 for async
	Records    int      `json:"records"`
	ValueSize  int      `json:"value_size"`
	Keyed      bool     `json:"keyed"`
	Brokers    int      `json:"brokers"`
	Partitions int      `json:"partitions"`
	MaxSeconds float64  `json:"max_seconds"` // stop sending after this long
	Rep        int      `json:"rep"`
	Addrs      []string `json:"addrs,omitempty"`
	Kafka      string   `json:"kafka,omitempty"` // real Apache Kafka version; empty: kfake
}

// result is what a client process measured, one JSON line on stdout.
type result struct {
	runSpec
	Sent            int64   `json:"sent"` // records measured (Records unless MaxSeconds cut it short)
	Errors          int64   `json:"errors"`
	FirstError      string  `json:"first_error,omitempty"`
	Seconds         float64 `json:"seconds"`
	RecordsPerSec   float64 `json:"records_per_sec"`
	CPUMicros       float64 `json:"cpu_us_per_record"`
	P50Micros       float64 `json:"p50_us"`
	P99Micros       float64 `json:"p99_us"`
	P999Micros      float64 `json:"p999_us"`
	PeakRSSMiB      float64 `json:"peak_rss_mib"`
	AllocsPerRecord float64 `json:"allocs_per_record"` // Go heap allocations only
	// Requests and RequestBytes count the produce requests written while
	// measuring and their bytes (kpush: record batches; franz-go: as
	// written, framing included); zero for clients without such hooks.
	Requests     int64 `json:"requests,omitempty"`
	RequestBytes int64 `json:"request_bytes,omitempty"`
	// BrokerCPUMicros is the fake broker process's CPU (user + system)
	// per record over the client's process (warm-up included), read by the
	// parent from /proc; zero on a real broker or without /proc.
	BrokerCPUMicros float64 `json:"broker_cpu_us_per_record,omitempty"`
}

// numKeys distinct keys cycle through keyed runs, so keys cost no
// allocation in the harness.
const numKeys = 4096

// outcomes counts errors and keeps the first one.
type outcomes struct {
	errors atomic.Int64
	first  atomic.Pointer[string]
}

// add counts one outcome.
func (o *outcomes) add(err error) {
	if err != nil && o.errors.Add(1) == 1 {
		s := err.Error()
		o.first.Store(&s)
	}
}

// runClient is the client process: it runs one spec and prints a result.
// Sends get context.Background(), as in the root module's benchmarks and
// the targets of docs/design.md: a context that can be cancelled costs kpush a
// select instead of a plain channel receive per Send. The parent kills a
// client that hangs.
func runClient(specJSON string, prof profiles) error {
	ctx := context.Background()
	var s runSpec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		return fmt.Errorf("client: bad -spec: %w", err)
	}
	p, err := findPeer(s.Client)
	if err != nil {
		return err
	}
	var (
		out outcomes
		wg  sync.WaitGroup
	)
	cfg := clientConfig{addrs: s.Addrs, async: s.Mode == "async", idem: p.idem, keyed: s.Keyed, variant: p.name,
		reqs: &reqCounter{}}
	if cfg.async {
		cfg.done = func(err error) {
			out.add(err)
			wg.Done()
		}
	}
	cl, err := p.build(cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", s.Client, err)
	}
	w := &workload{spec: s, cl: cl, out: &out, wg: &wg, value: make([]byte, s.ValueSize)}
	if s.Keyed {
		for i := range numKeys {
			w.keys = append(w.keys, fmt.Appendf(nil, "key-%06d", i))
		}
	}
	if err := w.warmUp(ctx); err != nil {
		return fmt.Errorf("%s: warm-up: %w", s.Client, err)
	}
	if prof.mem != "" {
		runtime.MemProfileRate = 64 << 10 // finer than the default 512 KiB: allocations per record are few
	}
	stopCPU, err := capture(prof.cpu, pprof.StartCPUProfile, pprof.StopCPUProfile)
	if err != nil {
		return err
	}
	stopTrace, err := capture(prof.trace, trace.Start, trace.Stop)
	if err != nil {
		stopCPU()
		return err
	}
	cfg.reqs.reset()
	r := w.measure(ctx)
	r.Requests, r.RequestBytes = cfg.reqs.n.Load(), cfg.reqs.bytes.Load()
	stopTrace()
	stopCPU()
	if prof.mem != "" {
		if err := writeAllocProfile(prof.mem); err != nil {
			return err
		}
	}
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	fmt.Println(string(line))
	cl.Close()
	return nil
}

// capture starts a CPU profile or a trace (start, stop) into the file at
// path and returns what ends it and closes the file; with path empty it
// does nothing.
func capture(path string, start func(io.Writer) error, stop func()) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := start(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		stop()
		f.Close()
	}, nil
}

// workload drives one client.
type workload struct {
	spec  runSpec
	cl    client
	out   *outcomes
	wg    *sync.WaitGroup // async: records without an outcome yet
	value []byte
	keys  [][]byte
}

// key is record i's key: nil when keyless.
func (w *workload) key(i int) []byte {
	if w.keys == nil {
		return nil
	}
	return w.keys[i%len(w.keys)]
}

// warmUp opens connections, loads metadata and producer IDs and fills
// pools before anything is measured.
func (w *workload) warmUp(ctx context.Context) error {
	if w.spec.Mode == "async" {
		const n = 2000
		w.wg.Add(n)
		for i := range n {
			w.cl.Produce(w.key(i), w.value)
		}
		if !waitTimeout(w.wg, time.Minute) {
			return fmt.Errorf("no outcome for some of %d records after a minute", n)
		}
		return nil
	}
	g := min(w.spec.C, 100)
	errs := make(chan error, g)
	for i := range g {
		go func() {
			var err error
			for j := range 3 {
				if e := w.cl.Send(ctx, w.key(i*3+j), w.value); e != nil && err == nil {
					err = e
				}
			}
			errs <- err
		}()
	}
	for range g {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

// waitTimeout waits for wg, up to limit; it reports whether wg finished.
func waitTimeout(wg *sync.WaitGroup, limit time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(limit):
		return false
	}
}

// cpuTime is the process's CPU time so far (user + system, all threads).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSS is this process's peak resident set in MiB: VmHWM, or getrusage's
// maxrss where /proc has none (it then includes the parent's peak: vmHWM).
func peakRSS() float64 {
	if hwm, ok := vmHWM(); ok {
		return hwm
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Maxrss) / 1024 // KiB on Linux
}

// vmHWM is this process's peak resident set in MiB, from /proc/self/status.
// Linux's ru_maxrss is not this process's own: exec carries over the peak
// of the memory it replaces, and Go starts children with vfork, so a
// client's ru_maxrss is at least the parent's peak (the -real warm-up
// client in the parent made every client read 67 MiB).
func vmHWM() (float64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kib / 1024, err == nil
		}
	}
	return 0, false
}

// measure runs the measured part and computes the result.
func (w *workload) measure(ctx context.Context) result {
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := cpuTime()
	t0 := time.Now()
	deadline := t0.Add(time.Duration(w.spec.MaxSeconds * float64(time.Second)))
	var sent int
	var lat []int64
	if w.spec.Mode == "async" {
		sent = w.runAsync(deadline)
	} else {
		sent, lat = w.runSync(ctx, deadline)
	}
	elapsed := time.Since(t0)
	cpu1, rss := cpuTime(), peakRSS()
	runtime.ReadMemStats(&m1)
	r := result{runSpec: w.spec, Sent: int64(sent), Errors: w.out.errors.Load(), Seconds: elapsed.Seconds(),
		PeakRSSMiB: rss}
	r.Addrs = nil
	if first := w.out.first.Load(); first != nil {
		r.FirstError = *first
	}
	if sent > 0 {
		r.RecordsPerSec = float64(sent) / elapsed.Seconds()
		r.CPUMicros = float64((cpu1 - cpu0).Nanoseconds()) / 1e3 / float64(sent)
		r.AllocsPerRecord = float64(m1.Mallocs-m0.Mallocs) / float64(sent)
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		pct := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / 1e3 }
		r.P50Micros, r.P99Micros, r.P999Micros = pct(0.50), pct(0.99), pct(0.999)
	}
	return r
}

// runSync runs C goroutines that each send one record and wait, until
// Records are sent or the deadline passes; it returns how many were sent
// and their send-to-acknowledgement latencies.
func (w *workload) runSync(ctx context.Context, deadline time.Time) (int, []int64) {
	n := int64(w.spec.Records)
	lat := make([]int64, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range w.spec.C {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				start := time.Now()
				if start.After(deadline) {
					lat[i] = -1
					return
				}
				w.out.add(w.cl.Send(ctx, w.key(int(i)), w.value))
				lat[i] = int64(time.Since(start))
			}
		}()
	}
	wg.Wait()
	// Indices past next were never claimed; claimed ones past the
	// deadline are marked -1.
	lat = slices.DeleteFunc(lat[:min(next.Load(), n)], func(d int64) bool { return d < 0 })
	return len(lat), lat
}

// runAsync pipelines records from this goroutine until Records are handed
// over or the deadline passes, then waits for every outcome.
func (w *workload) runAsync(deadline time.Time) int {
	n := w.spec.Records
	w.wg.Add(n)
	sent := 0
	for ; sent < n; sent++ {
		if sent%1024 == 0 && time.Now().After(deadline) {
			break
		}
		w.cl.Produce(w.key(sent), w.value)
	}
	w.wg.Add(sent - n)
	if !waitTimeout(w.wg, 2*time.Minute) {
		w.out.add(fmt.Errorf("records without an outcome two minutes after the last send"))
	}
	return sent
}

// writeAllocProfile writes the allocation profile (every allocation since
// the process started; the warm-up is small next to the measured part).
func writeAllocProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
