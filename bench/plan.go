package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kpush/kpush/kafkatest"
)

// options are the command-line flags.
type options struct {
	quick, full bool
	headline    bool
	clients     string
	levels      string
	reps        int
	records     int
	layout      layout // -brokers, -partitions, -s, -keyed: one layout instead of the mode's
	real        bool   // -real: real Apache Kafka instead of kfake
	out         string
	replot      string
	cpuProfile  string
	memProfile  string
	trace       string
	spec        string // internal: the run given to a child
}

func defineFlags(fs *flag.FlagSet) *options {
	o := &options{}
	fs.BoolVar(&o.quick, "quick", false, "the ~2-minute subset (the default): 1 broker, 12 partitions, 100 B keyless values, C=1..10000 and async, the five clients plus kpush and franz-go with idempotence off")
	fs.BoolVar(&o.headline, "headline", false, "the README headline cells only (~4 minutes on a quiet 2-core machine, up to 10 busy): kpush and franz-go at their defaults, 1 broker, 3 partitions, 100 B values, C=1..10000 and async keyless, plus async keyed; 7 interleaved repetitions; writes the headline section of docs/benchmarks.md")
	fs.BoolVar(&o.full, "full", false, "every cell: 1 and 3 brokers, 3 and 12 partitions, 100 B and 1 KiB, keyless and keyed, every idempotence variant, 1 M async records")
	fs.StringVar(&o.clients, "clients", "", "comma-separated clients to run (default: the five clients at their defaults and the idempotence-off kpush and franz-go with -quick, every variant with -full); known: "+peerNames())
	fs.StringVar(&o.levels, "c", "", "comma-separated sync concurrency levels, plus \"async\" (default 1,100,1000,10000,async)")
	fs.IntVar(&o.records, "n", 0, "records per run, overriding the mode's counts (0: the mode's)")
	fs.IntVar(&o.layout.Brokers, "brokers", 0, "run one layout with this many brokers (0: the mode's layouts)")
	fs.IntVar(&o.layout.Partitions, "partitions", 0, "run one layout with this many partitions (0: the mode's)")
	fs.IntVar(&o.layout.ValueSize, "s", 0, "run one layout with values of this many bytes (0: the mode's)")
	fs.BoolVar(&o.layout.Keyed, "keyed", false, "run one layout with keyed records")
	fs.BoolVar(&o.real, "real", false, "run on real Apache Kafka (kafkatest.RealCluster; version from KPUSH_KAFKA_VERSION, default "+kafkatest.DefaultKafkaVersion+"; KPUSH_KAFKA_SEEDS for your own cluster): 1 node, and 3 nodes with RF=3, 12 partitions, 100 B values; with -brokers etc., that layout on real Kafka")
	fs.IntVar(&o.reps, "reps", 0, "repetitions of every cell, interleaved across clients (0: the mode's, 3 with -quick, 5 with -full)")
	fs.StringVar(&o.out, "out", "../docs/benchmarks.md", "the doc to write (charts and a .json of the raw results go beside it); empty: print the table only")
	fs.StringVar(&o.replot, "replot", "", "rewrite the doc from a saved .json of results instead of measuring")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "directory for a CPU profile of every client run (its measured part; librdkafka's own threads show only as runtime._ExternalCode) and of the fake broker process of every run (its whole life, as broker-NAME)")
	fs.StringVar(&o.memProfile, "memprofile", "", "directory for an allocation profile of every client run (its measured part; Go allocations only)")
	fs.StringVar(&o.trace, "trace", "", "directory for a runtime/trace of every client run's measured part (Go code only: librdkafka's threads are not in it), as NAME.trace, and of the fake broker process of every run (its whole life, as broker-NAME.trace); read with go tool trace")
	fs.StringVar(&o.spec, "spec", "", "internal: the run, as JSON (with -role)")
	return o
}

func peerNames() string { return strings.Join(clientNames(slices.Concat(peers, experiments)), ", ") }

// layout is the broker side of a cell and the record shape.
type layout struct {
	Brokers    int  `json:"brokers"`
	Partitions int  `json:"partitions"`
	ValueSize  int  `json:"value_size"`
	Keyed      bool `json:"keyed"`
	// Kafka is the Apache Kafka version of a real-broker layout; empty
	// for kfake.
	Kafka string `json:"kafka,omitempty"`
}

func (l layout) String() string {
	keys := "keyless"
	if l.Keyed {
		keys = "keyed"
	}
	brokers := "1 broker"
	if l.Brokers > 1 {
		brokers = fmt.Sprintf("%d brokers", l.Brokers)
	}
	if l.Kafka != "" {
		brokers = "real Kafka " + l.Kafka + ", " + brokers
		if l.Brokers > 1 {
			brokers += fmt.Sprintf(" (RF=%d)", l.Brokers)
		}
	}
	return fmt.Sprintf("%s, %d partitions, %d B values, %s", brokers, l.Partitions, l.ValueSize, keys)
}

// level is one workload: a sync concurrency C, or async (C = 0).
type level int

const asyncLevel level = 0

func (c level) String() string {
	if c == asyncLevel {
		return "async"
	}
	return "C=" + strconv.Itoa(int(c))
}

// recordCounts are a mode's records per run: at C=1, at C up to 100, at
// higher C, and async.
type recordCounts struct{ c1, c100, more, async int }

func (n recordCounts) of(c level) int {
	switch {
	case c == asyncLevel:
		return n.async
	case c == 1:
		return n.c1
	case c <= 100:
		return n.c100
	}
	return n.more
}

// plan is everything one invocation runs.
type plan struct {
	mode       string // "quick", "full", "headline", "custom"
	layouts    []layout
	levels     []level
	cells      []cellKey // what runs, in order: every layout × level unless the mode picks
	clients    []string
	reps       int
	records    func(level) int
	maxSeconds float64
}

// headlineLayout is the layout of the README headline (issue 15's table).
var headlineLayout = layout{Brokers: 1, Partitions: 3, ValueSize: 100}

// headlinePlan is the README headline: kpush and franz-go at their
// defaults on the cells of issue 15's table, 7 interleaved repetitions.
// The record counts keep a run at 1–3 s on a quiet 2-core machine: a
// dry run at 20,000 records per run on a busy machine (12 runs in 12 s,
// 0.14 s per run for processes and warm-up) extrapolates to ~80 s per
// repetition there, ~3.5 minutes for all 7 on a quiet machine. C=10000
// at 600,000 records gives every goroutine 60 round trips.
func headlinePlan() *plan {
	keyed := headlineLayout
	keyed.Keyed = true
	p := &plan{mode: "headline", layouts: []layout{headlineLayout, keyed}, reps: 7, maxSeconds: 8,
		levels:  []level{1, 100, 1000, 10000, asyncLevel},
		clients: []string{"kpush", "franz-go"},
		records: recordCounts{c1: 30_000, c100: 300_000, more: 600_000, async: 3_000_000}.of}
	for _, c := range p.levels {
		p.cells = append(p.cells, cellKey{headlineLayout, c})
	}
	p.cells = append(p.cells, cellKey{keyed, asyncLevel})
	return p
}

// makePlan turns the flags into the cells to run.
func makePlan(o *options) (*plan, error) {
	if (o.quick && o.full) || (o.headline && (o.quick || o.full)) {
		return nil, fmt.Errorf("-quick, -full and -headline exclude each other")
	}
	if o.headline && (o.real || o.layout != layout{} || o.levels != "") {
		return nil, fmt.Errorf("-headline runs fixed cells: drop -real, -brokers, -partitions, -s, -keyed and -c")
	}
	base := layout{Brokers: 1, Partitions: 12, ValueSize: 100}
	if o.headline {
		p := headlinePlan()
		if o.clients != "" {
			p.clients = strings.Split(o.clients, ",")
			for _, c := range p.clients {
				if _, err := findPeer(c); err != nil {
					return nil, err
				}
			}
		}
		if o.records > 0 {
			p.records = func(level) int { return o.records }
		}
		if o.clients != "" || o.records > 0 || o.reps != 0 {
			p.mode += " (custom)"
		}
		if o.reps != 0 {
			p.reps = o.reps
		}
		if p.reps < 1 {
			return nil, fmt.Errorf("-reps must be at least 1")
		}
		return p, nil
	}
	p := &plan{mode: "quick", layouts: []layout{base}, reps: 3, maxSeconds: 5,
		records: recordCounts{c1: 5_000, c100: 50_000, more: 150_000, async: 500_000}.of}
	// The five clients at their defaults, and kpush and franz-go with
	// idempotence off too (both default to on).
	p.clients = append(clientNames(peers[:basePeers]), "kpush/idem-off", "franz-go/idem-off")
	if o.full {
		p.mode = "full"
		p.layouts = []layout{base, {3, 12, 100, false, ""}, {1, 3, 100, false, ""}, {1, 12, 1024, false, ""}, {1, 12, 100, true, ""}}
		p.clients = clientNames(peers)
		p.maxSeconds = 20
		p.reps = 5 // the headline cells come from -full: medians of 5 interleaved runs
		p.records = recordCounts{c1: 10_000, c100: 200_000, more: 500_000, async: 1_000_000}.of
	}
	p.levels = []level{1, 100, 1000, 10000, asyncLevel}
	if o.levels != "" {
		p.levels = nil
		for _, f := range strings.Split(o.levels, ",") {
			if f = strings.TrimSpace(f); f == "async" {
				p.levels = append(p.levels, asyncLevel)
				continue
			}
			c, err := strconv.Atoi(f)
			if err != nil || c < 1 || c > 100_000 {
				return nil, fmt.Errorf("-c: %q is not a level from 1 to 100000 or async", f)
			}
			p.levels = append(p.levels, level(c))
		}
	}
	if o.clients != "" {
		p.clients = strings.Split(o.clients, ",")
		for _, c := range p.clients {
			if _, err := findPeer(c); err != nil {
				return nil, err
			}
		}
	}
	if o.records > 0 {
		p.records = func(level) int { return o.records }
	}
	if o.real {
		applyRealMode(p, o)
	}
	custom := o.layout != layout{}
	if custom {
		l := o.layout
		if o.real {
			l.Kafka = kafkatest.KafkaVersion()
		}
		l.Brokers, l.Partitions, l.ValueSize = cmp.Or(l.Brokers, base.Brokers), cmp.Or(l.Partitions, base.Partitions), cmp.Or(l.ValueSize, base.ValueSize)
		p.layouts = []layout{l}
	}
	if o.levels != "" || o.clients != "" || o.records > 0 || custom {
		p.mode += " (custom)"
	}
	if o.reps != 0 {
		p.reps = o.reps
	}
	if p.reps < 1 {
		return nil, fmt.Errorf("-reps must be at least 1")
	}
	for _, l := range p.layouts {
		for _, c := range p.levels {
			p.cells = append(p.cells, cellKey{l, c})
		}
	}
	return p, nil
}

// clientNames lists the names of ps.
func clientNames(ps []peer) []string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.name
	}
	return names
}

// runParent measures every cell (or reloads saved results), prints the
// table and writes the doc.
func runParent(ctx context.Context, o *options) error {
	var res *results
	if o.replot != "" {
		b, err := os.ReadFile(o.replot)
		if err != nil {
			return err
		}
		res = &results{}
		if err := json.Unmarshal(b, res); err != nil {
			return fmt.Errorf("%s: %w", o.replot, err)
		}
		now := time.Now().UTC()
		res.Meta.Replotted = &now
	} else {
		p, err := makePlan(o)
		if err != nil {
			return err
		}
		prof := profiles{cpu: o.cpuProfile, mem: o.memProfile, trace: o.trace}
		for _, dir := range []string{prof.cpu, prof.mem, prof.trace} {
			if dir != "" {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
			}
		}
		res, err = p.run(ctx, prof)
		if err != nil {
			return err
		}
	}
	printSummary(os.Stdout, res)
	if o.out == "" {
		return nil
	}
	if isRealResults(res) {
		return writeRealDoc(o.out, res)
	}
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	if err := saveResults(o.out, res); err != nil {
		return err
	}
	if err := writeDoc(o.out, res); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s\n", o.out)
	return nil
}

// profiles are the directories for the runs' profiles and traces; empty: none.
type profiles struct{ cpu, mem, trace string }

// run measures every cell: layouts, then levels, then repetitions, with
// the clients in a different order in every repetition.
func (p *plan) run(ctx context.Context, prof profiles) (*results, error) {
	res := newResults(p)
	total := len(p.cells) * p.reps * len(p.clients)
	n := 0
	start := time.Now()
	for _, l := range p.layouts {
		var rb *realBroker // for every run of a real-broker layout
		if l.Kafka != "" {
			var err error
			if rb, err = startRealBroker(ctx, l); err != nil {
				return nil, err
			}
		}
		err := p.runLayout(ctx, l, rb, res, prof, &n, total, start)
		if rb != nil {
			rb.close()
		}
		if err != nil {
			return nil, err
		}
	}
	return res, nil
}

// runLayout runs every cell of one layout; rb is its real broker, or nil
// for a fresh kfake process per run.
func (p *plan) runLayout(ctx context.Context, l layout, rb *realBroker, res *results, prof profiles, n *int, total int, start time.Time) error {
	var addrs []string
	if rb != nil {
		addrs = rb.addrs
	}
	for _, k := range p.cells {
		if k.layout != l {
			continue
		}
		c := k.level
		for rep := range p.reps {
			for i := range p.clients {
				if err := ctx.Err(); err != nil {
					return err
				}
				name := p.clients[(i+rep)%len(p.clients)]
				s := runSpec{Client: name, Mode: "sync", C: int(c), Records: p.records(c),
					ValueSize: l.ValueSize, Keyed: l.Keyed, Brokers: l.Brokers, Partitions: l.Partitions,
					MaxSeconds: p.maxSeconds, Rep: rep + 1, Kafka: l.Kafka}
				if c == asyncLevel {
					s.Mode, s.C = "async", 1
				}
				*n++
				r := runOne(s, prof, addrs)
				res.Runs = append(res.Runs, r)
				fmt.Fprintf(os.Stderr, "[%d/%d %s] %s %s %-18s rep %d: %s\n", *n, total,
					time.Since(start).Round(time.Second), l, c, name, rep+1, r.brief())
			}
		}
	}
	return nil
}

// runOne runs one spec: a fresh broker process (unless addrs names a real
// broker already running), then a client process. Failures are recorded
// in the result, never fatal to the whole run.
func runOne(s runSpec, prof profiles, addrs []string) result {
	fail := func(err error) result {
		return result{runSpec: s, Errors: 1, FirstError: err.Error()}
	}
	name := fmt.Sprintf("%s-%s-c%d-%dbr-%db-%dp%s-rep%d", strings.ReplaceAll(s.Client, "/", "_"), s.Mode, s.C, s.Brokers, s.ValueSize, s.Partitions, keyedSuffix(s.Keyed), s.Rep)
	var broker *child
	if addrs == nil {
		bextra := fileFlag(nil, "-cpuprofile", prof.cpu, "broker-"+name+".prof")
		bextra = fileFlag(bextra, "-trace", prof.trace, "broker-"+name+".trace")
		b, kfakeAddrs, err := startBroker(s, bextra...)
		if err != nil {
			return fail(err)
		}
		defer b.stop()
		broker, addrs = b, kfakeAddrs
	}
	s.Addrs = addrs
	var brokerPid int
	if broker != nil {
		brokerPid = broker.cmd.Process.Pid
	}
	brokerCPU0 := procCPU(brokerPid)
	extra := fileFlag(nil, "-cpuprofile", prof.cpu, name+".prof")
	extra = fileFlag(extra, "-memprofile", prof.mem, name+".alloc.prof")
	extra = fileFlag(extra, "-trace", prof.trace, name+".trace")
	cl, err := startChild("client", s, extra...)
	if err != nil {
		return fail(err)
	}
	line, err := cl.readLine(time.Duration(s.MaxSeconds)*time.Second + 3*time.Minute)
	cl.stop()
	if err != nil {
		return fail(err)
	}
	var r result
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return fail(fmt.Errorf("client output %q: %w", line, err))
	}
	if cpu := procCPU(brokerPid); cpu > brokerCPU0 && r.Sent > 0 {
		// Includes the client's warm-up (2,000 async records, ≤ 300 sync).
		r.BrokerCPUMicros = (cpu - brokerCPU0).Seconds() * 1e6 / float64(r.Sent)
	}
	return r
}

// fileFlag appends flag with the file in dir to args; with dir empty (no
// profile of that kind asked for) it appends nothing.
func fileFlag(args []string, flag, dir, file string) []string {
	if dir == "" {
		return args
	}
	return append(args, flag, filepath.Join(dir, file))
}

// keyedSuffix names keyed runs' profiles.
func keyedSuffix(keyed bool) string {
	if keyed {
		return "-keyed"
	}
	return ""
}

// brief is one progress line's measurements.
func (r result) brief() string {
	if r.Sent == 0 {
		return "FAILED: " + r.FirstError
	}
	s := fmt.Sprintf("%7.0f rec/s %6.2f µs CPU/rec p99 %8.0f µs, %4.0f MiB, %.1f allocs/rec",
		r.RecordsPerSec, r.CPUMicros, r.P99Micros, r.PeakRSSMiB, r.AllocsPerRecord)
	if r.Requests > 0 {
		s += fmt.Sprintf(", %.0f rec/req", float64(r.Sent)/float64(r.Requests))
	}
	if r.BrokerCPUMicros > 0 {
		s += fmt.Sprintf(", broker %.2f µs CPU/rec", r.BrokerCPUMicros)
	}
	if r.Errors > 0 {
		s += fmt.Sprintf(", %d ERRORS (%s)", r.Errors, r.FirstError)
	}
	return s
}
