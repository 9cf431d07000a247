package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeResults is a run of plan p with made-up measurements: kpush twice
// as fast as every other client at half the CPU.
func fakeResults(t *testing.T, p *plan) *results {
	t.Helper()
	res := newResults(p)
	for _, k := range p.cells {
		for rep := 1; rep <= p.reps; rep++ {
			for _, c := range p.clients {
				f := 1.0
				if c == "kpush" {
					f = 2
				}
				s := runSpec{Client: c, Mode: "sync", C: int(k.level), Records: 1000, ValueSize: k.ValueSize, Keyed: k.Keyed,
					Brokers: k.Brokers, Partitions: k.Partitions, Rep: rep}
				if k.level == asyncLevel {
					s.Mode, s.C = "async", 1
				}
				res.Runs = append(res.Runs, result{runSpec: s, Sent: 1000, Seconds: 1, RecordsPerSec: 1000 * f,
					CPUMicros: 10 / f, P50Micros: 100 / f, P99Micros: 200 / f, P999Micros: 300 / f, PeakRSSMiB: 30, AllocsPerRecord: 1 / f})
			}
		}
	}
	return res
}

// TestHeadlinePlan: -headline runs issue 15's cells (1 broker, 3
// partitions, C=1..10000 and async keyless, plus async keyed), kpush and
// franz-go, at least 5 repetitions, and refuses flags that would change
// its cells.
func TestHeadlinePlan(t *testing.T) {
	p, err := makePlan(&options{headline: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.reps < 5 || len(p.clients) != 2 || p.clients[0] != "kpush" || p.clients[1] != "franz-go" {
		t.Fatalf("reps %d, clients %v", p.reps, p.clients)
	}
	keyed := headlineLayout
	keyed.Keyed = true
	want := []cellKey{{headlineLayout, 1}, {headlineLayout, 100}, {headlineLayout, 1000}, {headlineLayout, 10000},
		{headlineLayout, asyncLevel}, {keyed, asyncLevel}}
	if len(p.cells) != len(want) {
		t.Fatalf("cells %v, want %v", p.cells, want)
	}
	for i := range want {
		if p.cells[i] != want[i] {
			t.Fatalf("cell %d = %v, want %v", i, p.cells[i], want[i])
		}
	}
	for _, o := range []options{{headline: true, full: true}, {headline: true, quick: true}, {headline: true, levels: "1"},
		{headline: true, real: true}, {headline: true, layout: layout{Partitions: 12}}} {
		if _, err := makePlan(&o); err == nil {
			t.Errorf("makePlan(%+v) accepted flags -headline excludes", o)
		}
	}
}

// TestWriteDoc_KeepsBothRuns: writing the doc from a headline run keeps
// the saved full run beside it, and writing it from a full run keeps the
// saved headline; old results without settings are labelled equal-buffer.
func TestWriteDoc_KeepsBothRuns(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "benchmarks.md")
	head := fakeResults(t, headlinePlan())
	full, err := makePlan(&options{quick: true, clients: "kpush,franz-go", reps: 2})
	if err != nil {
		t.Fatal(err)
	}
	run := fakeResults(t, full)
	run.Meta.Settings = nil // as results saved before issue 15
	for _, r := range []*results{run, head} {
		if err := saveResults(path, r); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []*results{head, run} {
		if err := writeDoc(path, r); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		doc := string(b)
		for _, want := range []string{
			"## Headline: kpush and franz-go at their defaults, 1 broker, 3 partitions, 100 B values",
			"| async keyed | 2.00 | 0.50 | – | – | 0.50 |",
			"| C=1000 | 2.00 | 0.50 | 0.50 | 0.50 | 0.50 |",
			"## Earlier run: ",
			"equal buffer",
			"an equal-buffer comparison, not defaults against defaults",
		} {
			if !strings.Contains(doc, want) {
				t.Errorf("doc written from the %s run lacks %q", r.Meta.Mode, want)
			}
		}
	}
}

// TestWriteDoc_OneSyncLevel: a run of one concurrency level (-c 1) writes
// its doc without charts; drawing a log axis over one value made gonum
// panic after the results were saved.
func TestWriteDoc_OneSyncLevel(t *testing.T) {
	p, err := makePlan(&options{quick: true, clients: "kpush,franz-go", levels: "1", reps: 1})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "c1.md")
	if err := writeDoc(path, fakeResults(t, p)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if doc := string(b); !strings.Contains(doc, "| C=1 |") || strings.Contains(doc, "## Charts") {
		t.Errorf("one-level doc: want its C=1 row and no charts section, got:\n%s", doc)
	}
}
