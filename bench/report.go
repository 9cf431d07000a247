package main

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// results is a whole invocation's raw data, saved as JSON beside the doc
// so that -replot can rewrite the doc without measuring again.
type results struct {
	Meta meta     `json:"meta"`
	Runs []result `json:"runs"`
}

// meta says what ran where.
type meta struct {
	Command   string            `json:"command"`
	Mode      string            `json:"mode"`
	Date      time.Time         `json:"date"`
	Replotted *time.Time        `json:"replotted,omitempty"` // when -replot last rewrote the doc
	Commit    string            `json:"commit,omitempty"`
	CPUs      int               `json:"cpus"`
	CPUModel  string            `json:"cpu_model,omitempty"`
	Platform  string            `json:"platform"`
	GoVersion string            `json:"go_version"`
	Versions  map[string]string `json:"versions"`
	Layouts   []layout          `json:"layouts"`
	Levels    []level           `json:"levels"`
	// Cells are the layout × level cells that ran, in order; absent in
	// results saved before -headline, where every layout ran every level.
	Cells []savedCell `json:"cells,omitempty"`
	// Settings are the settings of every client variant as this run had
	// them (peers' text); absent in results saved before issue 15.
	Settings   map[string]string `json:"settings,omitempty"`
	Clients    []string          `json:"clients"`
	Reps       int               `json:"reps"`
	Records    map[string]int    `json:"records"` // per level
	MaxSeconds float64           `json:"max_seconds"`
}

func newResults(p *plan) *results {
	m := meta{
		Command: "go run -C bench . " + strings.Join(os.Args[1:], " "),
		Mode:    p.mode, Date: time.Now().UTC(), CPUs: runtime.NumCPU(), CPUModel: cpuModel(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH, GoVersion: runtime.Version(),
		Versions: moduleVersions(), Layouts: p.layouts, Levels: p.levels, Clients: p.clients,
		Reps: p.reps, Records: map[string]int{}, MaxSeconds: p.maxSeconds,
		Settings: map[string]string{},
	}
	for _, k := range p.cells {
		m.Cells = append(m.Cells, savedCell{k.layout, k.level})
	}
	for _, c := range p.clients {
		if pr, err := findPeer(c); err == nil {
			m.Settings[c] = pr.settings
		}
	}
	for _, c := range p.levels {
		m.Records[c.String()] = p.records(c)
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	return &results{Meta: m}
}

// cpuModel is the first "model name" of /proc/cpuinfo, if any.
func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// moduleVersions names the version of every client library in this build.
func moduleVersions() map[string]string {
	v := map[string]string{}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			switch d.Path {
			case "github.com/twmb/franz-go", "github.com/IBM/sarama", "github.com/segmentio/kafka-go",
				"github.com/confluentinc/confluent-kafka-go/v2", "github.com/twmb/franz-go/pkg/kfake":
				v[d.Path] = d.Version
			case "github.com/kpush/kpush":
				v[d.Path] = "this repository"
			}
		}
	}
	_, v["librdkafka"] = kafka.LibraryVersion()
	return v
}

// stat is a median with the spread (min and max) of the repetitions.
type stat struct{ med, lo, hi float64 }

// statOf computes the median and spread of vals (NaN when empty).
func statOf(vals []float64) stat {
	if len(vals) == 0 {
		return stat{math.NaN(), math.NaN(), math.NaN()}
	}
	s := slices.Clone(vals)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{med, s[0], s[len(s)-1]}
}

// cellKey names a cell: a layout and a level.
type cellKey struct {
	layout
	level
}

// savedCell is a cellKey as the saved results hold it.
type savedCell struct {
	Layout layout `json:"layout"`
	Level  level  `json:"level"`
}

// keyOf is the cell a run belongs to.
func keyOf(r result) cellKey {
	c := level(r.C)
	if r.Mode == "async" {
		c = asyncLevel
	}
	return cellKey{layout{r.Brokers, r.Partitions, r.ValueSize, r.Keyed, r.Kafka}, c}
}

// metric reads one number of a run.
type metric struct {
	name   string
	format func(float64) string
	get    func(result) float64
	lower  bool // lower is better
	sync   bool // measured in sync mode only
}

var (
	mThroughput = metric{"records/s", fmtRate, func(r result) float64 { return r.RecordsPerSec }, false, false}
	mCPU        = metric{"CPU µs/record", fmtFloat, func(r result) float64 { return r.CPUMicros }, true, false}
	mP50        = metric{"p50", fmtMicros, func(r result) float64 { return r.P50Micros }, true, true}
	mP99        = metric{"p99", fmtMicros, func(r result) float64 { return r.P99Micros }, true, true}
	mP999       = metric{"p99.9", fmtMicros, func(r result) float64 { return r.P999Micros }, true, true}
	mRSS        = metric{"peak RSS MiB", fmtInt, func(r result) float64 { return r.PeakRSSMiB }, true, false}
	mAllocs     = metric{"allocs/record", fmtFloat, func(r result) float64 { return r.AllocsPerRecord }, true, false}
	allMetrics  = []metric{mThroughput, mCPU, mP50, mP99, mP999, mRSS, mAllocs}
)

// index groups runs by cell and client.
type index map[cellKey]map[string][]result

// indexRuns groups runs by cell and client.
func indexRuns(runs []result) index {
	ix := index{}
	for _, r := range runs {
		k := keyOf(r)
		if ix[k] == nil {
			ix[k] = map[string][]result{}
		}
		ix[k][r.Client] = append(ix[k][r.Client], r)
	}
	return ix
}

// stat is a metric's median and spread over a client's repetitions in a
// cell; runs without measurements are left out.
func (ix index) stat(k cellKey, client string, m metric) stat {
	var vals []float64
	for _, r := range ix[k][client] {
		if r.Sent > 0 && (!m.sync || r.Mode == "sync") {
			vals = append(vals, m.get(r))
		}
	}
	return statOf(vals)
}

// ratio is a metric's a/b ratio per repetition (the two runs of one
// repetition ran back to back), as a median and spread.
func (ix index) ratio(k cellKey, a, b string, m metric) stat {
	var vals []float64
	for _, ra := range ix[k][a] {
		for _, rb := range ix[k][b] {
			if ra.Rep == rb.Rep && ra.Sent > 0 && rb.Sent > 0 && m.get(rb) > 0 && (!m.sync || ra.Mode == "sync") {
				vals = append(vals, m.get(ra)/m.get(rb))
			}
		}
	}
	return statOf(vals)
}

// perRequest is a client's records and bytes per produce request in a
// cell, over the runs that counted requests (kpush and franz-go only; "–"
// for the others).
func (ix index) perRequest(k cellKey, client string) [2]stat {
	var recs, bytes []float64
	for _, r := range ix[k][client] {
		if r.Sent > 0 && r.Requests > 0 {
			recs = append(recs, float64(r.Sent)/float64(r.Requests))
			bytes = append(bytes, float64(r.RequestBytes)/float64(r.Requests))
		}
	}
	return [2]stat{statOf(recs), statOf(bytes)}
}

// errors sums a client's errors in a cell and returns the first message.
func (ix index) errors(k cellKey, client string) (n int64, first string) {
	for _, r := range ix[k][client] {
		n += r.Errors
		if first == "" {
			first = r.FirstError
		}
	}
	return n, first
}

// cells lists the run's cells in plan order.
func (res *results) cells() []cellKey {
	var ks []cellKey
	for _, c := range res.Meta.Cells {
		ks = append(ks, cellKey{c.Layout, c.Level})
	}
	if len(ks) > 0 {
		return ks
	}
	for _, l := range res.Meta.Layouts {
		for _, c := range res.Meta.Levels {
			ks = append(ks, cellKey{l, c})
		}
	}
	return ks
}

// scale formats a number by the first step whose min it reaches: value
// divided by div, printed with format. NaN (nothing measured) prints "–".
type scale []struct {
	min, div float64
	format   string
}

func (sc scale) format(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	for _, st := range sc {
		if v >= st.min {
			return fmt.Sprintf(st.format, v/st.div)
		}
	}
	return fmt.Sprint(v)
}

var (
	anything  = math.Inf(-1)
	fmtFloat  = scale{{100, 1, "%.0f"}, {10, 1, "%.1f"}, {anything, 1, "%.2f"}}.format
	fmtInt    = scale{{anything, 1, "%.0f"}}.format
	fmtRatio  = scale{{anything, 1, "%.2f"}}.format
	fmtRate   = scale{{1e6, 1e6, "%.2f M"}, {1e3, 1e3, "%.0f k"}, {anything, 1, "%.0f"}}.format
	fmtMicros = scale{{1e4, 1e3, "%.0f ms"}, {1e3, 1e3, "%.1f ms"}, {anything, 1, "%.0f µs"}}.format
)

// spread formats a stat as "median (min–max)".
func (s stat) spread(f func(float64) string) string {
	if math.IsNaN(s.med) {
		return "–"
	}
	if s.lo == s.hi {
		return f(s.med)
	}
	return fmt.Sprintf("%s (%s–%s)", f(s.med), f(s.lo), f(s.hi))
}

// printSummary prints the medians of every cell as a plain table.
func printSummary(w io.Writer, res *results) {
	ix := indexRuns(res.Runs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "layout\tworkload\tclient\trecords/s\tCPU µs/rec\tp50\tp99\tp99.9\tRSS MiB\tallocs/rec\terrors\tCPU vs franz-go\trec/s vs franz-go\trec/req\tB/req\t")
	for _, k := range res.cells() {
		for _, c := range res.Meta.Clients {
			if len(ix[k][c]) == 0 {
				continue
			}
			row := []string{layoutShort(k.layout), k.level.String(), c}
			for _, m := range allMetrics {
				row = append(row, m.format(ix.stat(k, c, m).med))
			}
			n, _ := ix.errors(k, c)
			row = append(row, fmt.Sprint(n), fmtRatio(ix.ratio(k, c, "franz-go", mCPU).med),
				fmtRatio(ix.ratio(k, c, "franz-go", mThroughput).med))
			perReq := ix.perRequest(k, c)
			row = append(row, perReq[0].spread(fmtFloat), perReq[1].spread(fmtInt))
			fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
		}
	}
	tw.Flush()
}

// layoutShort names a layout in a table cell: 1b/12p/100B[/keyed].
func layoutShort(l layout) string {
	keys := ""
	if l.Keyed {
		keys = "/keyed"
	}
	return fmt.Sprintf("%db/%dp/%dB%s", l.Brokers, l.Partitions, l.ValueSize, keys)
}

// target is one docs/design.md performance target checked against the data.
type target struct {
	what   string
	value  stat
	limit  float64
	atMost bool // the value must be ≤ limit (else ≥)
	format func(float64) string
}

// met reports whether the median meets the limit.
func (t target) met() bool {
	if math.IsNaN(t.value.med) {
		return false
	}
	if t.atMost {
		return t.value.med <= t.limit
	}
	return t.value.med >= t.limit
}

// targets computes the targets of docs/design.md from the first layout's
// cells, and in a headline run the async targets of its other layouts too.
func (res *results) targets() []target {
	if len(res.Meta.Layouts) == 0 {
		return nil
	}
	ix := indexRuns(res.Runs)
	l := res.Meta.Layouts[0]
	cells := res.cells()
	has := func(l layout, c level) bool { return slices.Contains(cells, cellKey{l, c}) }
	var ts []target
	add := func(what string, v stat, limit float64, atMost bool) {
		ts = append(ts, target{what, v, limit, atMost, fmtRatio})
	}
	for _, c := range []level{1, 1000, 10000} {
		if has(l, c) {
			add(fmt.Sprintf("CPU/record kpush/franz-go at %s", c), ix.ratio(cellKey{l, c}, "kpush", "franz-go", mCPU), 0.5, true)
		}
	}
	if has(l, 100) && has(l, 10000) {
		hi, lo := ix.stat(cellKey{l, 10000}, "kpush", mCPU), ix.stat(cellKey{l, 100}, "kpush", mCPU)
		add("kpush CPU/record C=10000 ÷ C=100 (medians)", stat{hi.med / lo.med, hi.lo / lo.hi, hi.hi / lo.lo}, 1.2, true)
	}
	for _, c := range []level{1000, 10000} {
		if has(l, c) {
			add(fmt.Sprintf("records/s kpush/franz-go at %s", c), ix.ratio(cellKey{l, c}, "kpush", "franz-go", mThroughput), 1.3, false)
		}
	}
	for _, c := range res.Meta.Levels {
		if c != asyncLevel && has(l, c) {
			add(fmt.Sprintf("p99 kpush/franz-go at %s", c), ix.ratio(cellKey{l, c}, "kpush", "franz-go", mP99), 0.8, true)
		}
	}
	if has(l, 1) {
		add("p50 kpush/franz-go at C=1", ix.ratio(cellKey{l, 1}, "kpush", "franz-go", mP50), 0.9, true)
	}
	for _, al := range res.Meta.Layouts {
		k := cellKey{al, asyncLevel}
		if !has(al, asyncLevel) || (al != l && !isHeadline(res)) {
			continue
		}
		name := "async"
		if al != l {
			name = "async (" + layoutShort(al) + ")"
		}
		add(name+" records/s kpush/franz-go", ix.ratio(k, "kpush", "franz-go", mThroughput), 1.3, false)
		add(name+" CPU/record kpush/franz-go", ix.ratio(k, "kpush", "franz-go", mCPU), 0.7, true)
	}
	for _, k := range cells {
		if k.layout == l && (k.level == 1000 || k.level == 10000 || k.level == asyncLevel) || k.level == asyncLevel && isHeadline(res) {
			what := fmt.Sprintf("kpush allocs/record at %s", k.level)
			if k.layout != l {
				what += " (" + layoutShort(k.layout) + ")"
			}
			add(what, ix.stat(k, "kpush", mAllocs), 1, true)
		}
	}
	var errs float64
	for _, r := range res.Runs {
		errs += float64(r.Errors)
	}
	add("errors, all runs of all clients", stat{errs, errs, errs}, 0, true)
	ts[len(ts)-1].format = fmtInt
	return ts
}

// sortedVersions lists module versions by path.
func sortedVersions(v map[string]string) [][2]string {
	var out [][2]string
	for k, ver := range v {
		out = append(out, [2]string{k, ver})
	}
	slices.SortFunc(out, func(a, b [2]string) int { return cmp.Compare(a[0], b[0]) })
	return out
}
