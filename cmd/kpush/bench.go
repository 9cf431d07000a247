package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

const benchUsage = `Usage: kpush bench [flags]

Runs the seed workload: C goroutines each send one record and wait for its
acknowledgement, for each concurrency level C. Without -b, it starts an
embedded fake Kafka broker in this process first (its CPU is then counted
too; use -b with "kpush dev" or a real cluster to measure the client alone).

Examples:
  kpush bench
  kpush bench -c 1,1000 -d 5s -s 1024 -z zstd
  kpush bench -c 100 -n 500000 -keyed
  kpush bench -async -d 5s
  kpush bench -b localhost:9092 -t bench-topic --json
  KPUSH_SASL_PASSWORD=... kpush bench -b broker:9093 -t bench-topic -c 100 \
      -X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-256 -X sasl.username=app

-X security properties (with -b; as in kpush produce):
` + securityHelp + `
Flags:
`

type benchConfig struct {
	brokers     string
	topic       string
	partitions  int
	levels      []int
	duration    time.Duration
	records     int64 // per level; 0: run for duration
	async       bool
	valueSize   int
	keyed       bool
	compression kpush.Compression
	acks        kpush.Acks
	json        bool
	sec         securityProps
	secOpts     []kpush.Option
	metricsAddr string // --metrics-addr (metrics.go)
	noStages    bool   // --no-stages: no per-stage breakdown (and no record hooks)
}

// levelResult is one concurrency level's measurement.
type levelResult struct {
	Mode          string  `json:"mode"` // "sync" or "async"
	Concurrency   int     `json:"concurrency"`
	Records       int64   `json:"records"`
	Failed        int64   `json:"failed"`
	Seconds       float64 `json:"seconds"`
	RecordsPerSec float64 `json:"records_per_sec"`
	CPUMicros     float64 `json:"cpu_us_per_record"`
	P50Micros     float64 `json:"p50_us"`
	P99Micros     float64 `json:"p99_us"`
	RecsPerBatch  float64 `json:"records_per_batch"`
}

func parseBenchFlags(args []string, stderr io.Writer) (*benchConfig, error) {
	cfg := &benchConfig{topic: "kpush-bench", partitions: 12, duration: 2 * time.Second, valueSize: 100}
	opts := &optionSet{cmd: "bench"}
	levels, codec, acks := "1,100,1000,10000", "none", "all"
	num := func(p *int) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%q is not a whole number", v)
			}
			*p = n
			return nil
		}
	}
	opts.str('b', "brokers", "BROKERS", "comma-separated brokers; none: start an embedded broker", &cfg.brokers)
	opts.str('t', "topic", "TOPIC", "topic (default kpush-bench; must exist when -b is given)", &cfg.topic)
	opts.fn(0, "partitions", "N", "partitions of the embedded broker's topic (default 12)", num(&cfg.partitions))
	opts.str('c', "concurrency", "LEVELS", "comma-separated concurrency levels (default 1,100,1000,10000)", &levels)
	opts.fn('d', "duration", "DURATION", "duration of each level, e.g. 5s (default 2s; unless -n is given)", func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration such as 5s", v)
		}
		cfg.duration = d
		return nil
	})
	opts.fn('n', "records", "N", "records per level instead of a duration (0: use -d)", func(v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		cfg.records = n
		return nil
	})
	opts.boolean(0, "async", "one goroutine pipelining SendAsync with callbacks instead of the -c levels", &cfg.async)
	opts.fn('s', "size", "BYTES", "value size in bytes (default 100)", num(&cfg.valueSize))
	opts.boolean(0, "keyed", "give every record a distinct key (murmur2 partitioning)", &cfg.keyed)
	opts.str('z', "compression", "CODEC", "compression: none (default), gzip, snappy, lz4, zstd", &codec)
	opts.str(0, "acks", "ACKS", "acks: all (default), 1 (leader) or 0 (none)", &acks)
	opts.boolean(0, "json", "print results as JSON", &cfg.json)
	opts.str(0, "metrics-addr", "HOST:PORT", "serve /metrics (Prometheus text format) on HOST:PORT while running", &cfg.metricsAddr)
	opts.boolean(0, "no-stages", "do not print the per-stage latency breakdown (it installs hooks, which cost CPU)", &cfg.noStages)
	xSet, xErr := xOption(func(name, value string) error {
		known, err := cfg.sec.set(name, value)
		if !known {
			err = fmt.Errorf("-X %s: not a security property (known: %s)", name, securityPropNames)
		}
		return err
	})
	opts.fn('X', "", "PROP=VALUE", "security property (see above); repeatable", xSet)
	rest, err := opts.parse(args)
	if errors.Is(err, errHelp) {
		fmt.Fprint(stderr, benchUsage)
		opts.printOptions(stderr)
		return nil, errHelp
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, err
	}
	bad := func(format string, a ...any) (*benchConfig, error) {
		err := opts.errorf(format, a...)
		fmt.Fprintln(stderr, err)
		return nil, err
	}
	if len(rest) > 0 {
		return bad("unexpected argument %q", rest[0])
	}
	if *xErr != nil {
		return bad("%v", *xErr)
	}
	for _, f := range strings.Split(levels, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 || c > 1_000_000 {
			return bad("-c: %q is not a concurrency between 1 and 1000000", f)
		}
		cfg.levels = append(cfg.levels, c)
	}
	if cfg.duration <= 0 {
		return bad("-d must be positive")
	}
	if cfg.records < 0 {
		return bad("-n must not be negative")
	}
	if cfg.valueSize < 0 || cfg.valueSize > 900_000 {
		return bad("-s: %d is not between 0 and 900000", cfg.valueSize)
	}
	if cfg.partitions < 1 {
		return bad("--partitions must be at least 1")
	}
	c, err := kpush.ParseCompression(codec)
	if err != nil {
		return bad("-z: %v", err)
	}
	cfg.compression = c
	switch acks {
	case "all", "-1":
		cfg.acks = kpush.AcksAll
	case "1", "leader":
		cfg.acks = kpush.AcksLeader
	case "0", "none":
		cfg.acks = kpush.AcksNone
	default:
		return bad("--acks: %q is not all, 1 or 0", acks)
	}
	if cfg.secOpts, err = cfg.sec.options(); err != nil {
		return bad("%v", err)
	}
	if len(cfg.secOpts) > 0 && cfg.brokers == "" {
		return bad("-X security properties need -b (the embedded broker is plaintext)")
	}
	return cfg, nil
}

// errHelp: -h was asked for; usage is printed and the exit code is 0.
var errHelp = errors.New("help requested")

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseBenchFlags(args, stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	brokers := strings.Split(cfg.brokers, ",")
	where := cfg.brokers
	if cfg.brokers == "" {
		c, err := kafkatest.NewCluster(kafkatest.WithTopic(cfg.topic, int32(cfg.partitions)))
		if err != nil {
			return fmt.Errorf("start embedded broker: %w", err)
		}
		defer c.Close()
		brokers = c.Addrs()
		where = "embedded in this process, " + strings.Join(brokers, ",")
	}
	popts := append(cfg.secOpts, kpush.WithBrokers(brokers...), kpush.WithCompression(cfg.compression),
		kpush.WithAcks(cfg.acks), kpush.WithDeliveryTimeout(max(30*time.Second, 2*cfg.duration)),
		kpush.WithRequestTimeout(10*time.Second))
	var hm *cliMetrics // the hooks: stage breakdown and --metrics-addr
	stages := !cfg.noStages && !cfg.json
	if stages || cfg.metricsAddr != "" {
		hm = newCLIMetrics(stages)
		popts = append(popts, kpush.WithHooks(hm))
	}
	if cfg.metricsAddr != "" {
		stop, _, err := serveMetrics(cfg.metricsAddr, hm)
		if err != nil {
			return err
		}
		defer stop()
	}
	p, err := kpush.New(popts...)
	if err != nil {
		return err
	}
	defer p.Close(context.Background())

	// One record first: metadata, connection and producer ID, and a clear
	// error (not a hang) when the broker is unreachable or the topic missing.
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	_, err = p.Send(wctx, &kpush.Record{Topic: cfg.topic, Value: make([]byte, cfg.valueSize)})
	cancel()
	if err != nil {
		return firstRecordError(cfg, err)
	}
	progress := io.Discard // carriage-return progress is for a terminal only
	if isTerminal(stderr) {
		progress = stderr
	}

	if !cfg.json {
		fmt.Fprintf(stdout, "kpush bench: %d-byte values, acks=%s, compression=%s, %v per level\nbroker: %s\n\n",
			cfg.valueSize, acksName(cfg.acks), cfg.compression, cfg.duration, where)
	}
	var results []levelResult
	levels := cfg.levels
	if cfg.async {
		levels = []int{1}
	}
	for _, c := range levels {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var r levelResult
		if stages {
			hm.resetStages()
		}
		if cfg.async {
			r = runAsync(ctx, p, cfg, progress)
		} else {
			r = runLevel(ctx, p, cfg, c, progress)
		}
		results = append(results, r)
		if !cfg.json {
			if len(results) == 1 {
				printHeader(stdout)
			}
			printRow(stdout, r) // as soon as the level ends
			if stages {
				hm.printStages(stdout)
			}
		}
		if r.Failed > 0 {
			return fmt.Errorf("C=%d: %d of %d records failed", c, r.Failed, r.Records+r.Failed)
		}
	}
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	if cfg.brokers == "" {
		fmt.Fprintln(stdout, "\ncpu µs/record counts this whole process, the embedded broker included.")
	}
	return nil
}

func acksName(a kpush.Acks) string {
	switch a {
	case kpush.AcksLeader:
		return "1"
	case kpush.AcksNone:
		return "0"
	}
	return "all"
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runLevel runs c goroutines, each sending and waiting, for cfg.duration.
func runLevel(parent context.Context, p *kpush.Producer, cfg *benchConfig, c int, progress io.Writer) levelResult {
	value := make([]byte, cfg.valueSize)
	var sent, failed atomic.Int64
	lats := make([][]int64, c)
	before := p.Stats()
	ctx, cancel := context.WithTimeout(parent, cfg.duration)
	if cfg.records > 0 {
		cancel()
		ctx, cancel = context.WithCancel(parent) // -n: no duration limit; Ctrl-C still stops
	}
	defer cancel()
	done, progressDone := make(chan struct{}), make(chan struct{})
	go func() { // live progress on stderr
		defer close(progressDone)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprintf(progress, "\r%60s\r", "")
				return
			case <-t.C:
				fmt.Fprintf(progress, "\rC=%-6d %12d records sent", c, sent.Load())
			}
		}
	}()
	var wg sync.WaitGroup
	var claimed atomic.Int64
	more := func() bool { // another record for this level?
		if cfg.records > 0 {
			return claimed.Add(1) <= cfg.records && ctx.Err() == nil
		}
		return ctx.Err() == nil
	}
	cpu0, t0 := cpuTime(), time.Now()
	for g := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var key []byte
			for i := 0; more(); i++ {
				if cfg.keyed {
					key = strconv.AppendInt(strconv.AppendInt(key[:0], int64(g), 10), int64(i), 10)
				}
				start := time.Now()
				// Background, not ctx: the level's end must not turn
				// records in flight into failures.
				_, err := p.Send(context.Background(), &kpush.Record{Topic: cfg.topic, Key: key, Value: value})
				if err != nil {
					failed.Add(1)
					continue
				}
				lats[g] = append(lats[g], int64(time.Since(start)))
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed, cpu := time.Since(t0), cpuTime()-cpu0
	close(done)
	<-progressDone // it writes to progress until then
	after := p.Stats()

	r := levelResult{Mode: "sync", Concurrency: c, Records: sent.Load(), Failed: failed.Load()}
	r.fill(slices.Concat(lats...), elapsed, cpu, before, after)
	return r
}

// fill computes the rates, latency percentiles and batch size of a level
// from its latencies, wall time, CPU time and the producer's stats.
func (r *levelResult) fill(lats []int64, elapsed, cpu time.Duration, before, after kpush.Stats) {
	r.Seconds = elapsed.Seconds()
	slices.Sort(lats)
	if r.Records > 0 && len(lats) > 0 {
		r.RecordsPerSec = float64(r.Records) / elapsed.Seconds()
		r.CPUMicros = float64(cpu.Microseconds()) / float64(r.Records)
		r.P50Micros = float64(lats[len(lats)/2]) / 1e3
		r.P99Micros = float64(lats[len(lats)*99/100]) / 1e3
	}
	if n := after.Batches - before.Batches; n > 0 {
		r.RecsPerBatch = float64(after.BatchedRecords-before.BatchedRecords) / float64(n)
	}
}

// runAsync pipelines records from one goroutine with SendAsync; latency is
// from the call to the callback.
func runAsync(ctx context.Context, p *kpush.Producer, cfg *benchConfig, progress io.Writer) levelResult {
	value := make([]byte, cfg.valueSize)
	var sent, failed atomic.Int64
	var mu sync.Mutex
	var lats []int64
	before := p.Stats()
	deadline := time.Now().Add(cfg.duration)
	cpu0, t0 := cpuTime(), time.Now()
	var key []byte
	for i := int64(0); ctx.Err() == nil; i++ {
		if cfg.records > 0 && i >= cfg.records || cfg.records == 0 && i%1024 == 0 && time.Now().After(deadline) {
			break
		}
		if cfg.keyed {
			key = strconv.AppendInt(nil, i, 10)
		}
		start := time.Now()
		p.SendAsync(ctx, &kpush.Record{Topic: cfg.topic, Key: key, Value: value}, func(_ kpush.Result, err error) {
			if err != nil {
				failed.Add(1)
				return
			}
			d := int64(time.Since(start))
			mu.Lock()
			lats = append(lats, d)
			mu.Unlock()
			sent.Add(1)
		})
		if i%65536 == 0 {
			fmt.Fprintf(progress, "\rasync %12d records sent", sent.Load())
		}
	}
	if err := p.Flush(context.WithoutCancel(ctx)); err != nil {
		failed.Add(1)
	}
	fmt.Fprintf(progress, "\r%60s\r", "")
	elapsed, cpu := time.Since(t0), cpuTime()-cpu0
	after := p.Stats()
	mu.Lock()
	defer mu.Unlock()
	r := levelResult{Mode: "async", Concurrency: 1, Records: sent.Load(), Failed: failed.Load()}
	r.fill(lats, elapsed, cpu, before, after)
	return r
}

// The table is printed a row at a time, as each level ends, so its
// columns have fixed widths rather than tabwriter's.
const rowFormat = "%11s %9s %10s %13s %7s %7s %13s\n"

func printHeader(w io.Writer) {
	// One more byte for each "µ", which takes two bytes but one column.
	fmt.Fprintf(w, "%11s %9s %10s %14s %8s %8s %13s\n", "concurrency", "records", "records/s", "cpu µs/record", "p50 µs", "p99 µs", "records/batch")
}

func printRow(w io.Writer, r levelResult) {
	c := strconv.Itoa(r.Concurrency)
	if r.Mode == "async" {
		c = "async"
	}
	fmt.Fprintf(w, rowFormat, c, strconv.FormatInt(r.Records, 10), fmt.Sprintf("%.0f", r.RecordsPerSec),
		fmt.Sprintf("%.2f", r.CPUMicros), fmt.Sprintf("%.0f", r.P50Micros), fmt.Sprintf("%.0f", r.P99Micros),
		fmt.Sprintf("%.1f", r.RecsPerBatch))
}

// firstRecordError explains why the first record failed, in terms of the
// command's flags.
func firstRecordError(cfg *benchConfig, err error) error {
	cause := strings.TrimPrefix(err.Error(), "kpush: ")
	var pe *kpush.ProduceError
	if errors.As(err, &pe) {
		cause = strings.TrimPrefix(pe.Err.Error(), "kpush: ")
	}
	switch {
	case errors.Is(err, kpush.ErrUnknownTopic):
		return fmt.Errorf("topic %q does not exist on %s: create it (e.g. kafka-topics.sh --bootstrap-server %s --create --topic %s --partitions 12) or pass -t TOPIC",
			cfg.topic, cfg.brokers, strings.Split(cfg.brokers, ",")[0], cfg.topic)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, kpush.ErrNoBroker):
		return fmt.Errorf("the first record to %s was not acknowledged within 15s (%s): is the broker at -b %s up?", cfg.topic, cause, cfg.brokers)
	}
	return fmt.Errorf("the first record to %s failed: %s", cfg.topic, cause)
}
