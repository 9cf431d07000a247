package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpush/kpush/kafkatest"
)

// realJVMOptions are the broker JVM's flags for benchmarks: the heap and
// collector settings Kafka's own kafka-server-start.sh and
// kafka-run-class.sh use, with the full JIT (kafkatest's test defaults
// stop at C1 to start fast, which would slow the broker down).
var realJVMOptions = []string{
	"-Xms1g", "-Xmx1g", "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
	"-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
	"-XX:MaxInlineLevel=15", "-Djava.awt.headless=true",
}

// realLayouts are the layouts -real runs: one node, and three nodes with
// RF=3 and min.insync.replicas=2 (every client uses acks=all).
func realLayouts(version string) []layout {
	return []layout{
		{Brokers: 1, Partitions: 12, ValueSize: 100, Kafka: version},
		{Brokers: 3, Partitions: 12, ValueSize: 100, Kafka: version},
	}
}

// realBroker is a real Apache Kafka cluster serving every run of one
// layout. Its JVMs are child processes of the benchmark's parent process,
// never of the measured client process, so their CPU is not counted.
type realBroker struct {
	c     *kafkatest.RealCluster
	addrs []string
}

// startRealBroker starts (or, with KPUSH_KAFKA_SEEDS, attaches to) the
// layout's cluster and creates the bench topic. The topic keeps at most
// 64 MiB per partition, so repeated runs do not fill the disk.
func startRealBroker(ctx context.Context, l layout) (*realBroker, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	fmt.Fprintf(os.Stderr, "starting real Kafka %s, %d node(s)\n", l.Kafka, l.Brokers)
	c, err := kafkatest.NewRealCluster(ctx, kafkatest.WithNodes(l.Brokers), kafkatest.WithKafkaVersion(l.Kafka),
		kafkatest.WithJVMOptions(realJVMOptions...))
	if err != nil {
		return nil, fmt.Errorf("real broker: %w", err)
	}
	b := &realBroker{c: c, addrs: c.Addrs()}
	if err := b.resetTopic(ctx, l); err != nil {
		c.Close()
		return nil, err
	}
	if err := b.warmUp(ctx, l); err != nil {
		c.Close()
		return nil, err
	}
	return b, nil
}

// realWarmUp is how long warmUp loads a fresh cluster before the first
// measured run.
const realWarmUp = 20 * time.Second

// warmUp loads a fresh cluster for realWarmUp before anything is measured:
// pipelined records, then one synchronous sender. A cold JVM interprets its
// produce path until the JIT compiles it, and on 2 cores that takes tens of
// seconds: without this, the records/s of a layout's first repetitions
// climbed 5× from one run to the next (3 nodes, C=1: 114 → 625 records/s),
// so whichever client ran first looked slow. It uses franz-go, with its
// output discarded, and writes to the bench topic, whose retention bounds it.
func (b *realBroker) warmUp(ctx context.Context, l layout) error {
	fmt.Fprintf(os.Stderr, "warming up real Kafka for %s\n", realWarmUp)
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addrs...), kgo.DefaultProduceTopic(benchTopic),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		return err
	}
	defer cl.Close()
	value := make([]byte, l.ValueSize)
	var failed atomic.Int64
	pipelined := time.Now().Add(realWarmUp / 2)
	for time.Now().Before(pipelined) && ctx.Err() == nil {
		for range 1000 {
			cl.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
				if err != nil {
					failed.Add(1)
				}
			})
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return fmt.Errorf("real broker: warm-up: %w", err)
	}
	end := time.Now().Add(realWarmUp / 2)
	for time.Now().Before(end) && ctx.Err() == nil {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: value}).FirstErr(); err != nil {
			failed.Add(1)
		}
	}
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("real broker: warm-up: %d records failed", n)
	}
	return ctx.Err()
}

// resetTopic deletes the bench topic if it exists and creates it again.
func (b *realBroker) resetTopic(ctx context.Context, l layout) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addrs...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.DeleteTopics(ctx, benchTopic); err != nil {
		return fmt.Errorf("real broker: delete topic: %w", err)
	}
	retention, segment := fmt.Sprint(64<<20), fmt.Sprint(16<<20)
	configs := map[string]*string{"retention.bytes": &retention, "segment.bytes": &segment}
	backoff := 100 * time.Millisecond
	for {
		// Deletion is asynchronous: TOPIC_ALREADY_EXISTS until it is done.
		resp, err := adm.CreateTopic(ctx, int32(l.Partitions), -1, configs, benchTopic)
		if err == nil {
			err = resp.Err
		}
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("real broker: create topic: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	for {
		md, err := adm.Metadata(ctx, benchTopic)
		if err == nil {
			ok := len(md.Topics[benchTopic].Partitions) == l.Partitions
			for _, p := range md.Topics[benchTopic].Partitions {
				ok = ok && p.Leader >= 0 && len(p.ISR) == l.Brokers
			}
			if ok {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("real broker: topic has no leaders: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (b *realBroker) close() {
	if err := b.c.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "real broker: close: %v\n", err)
	}
}

// realRecords are the records per run of the -real mode. With realMaxSeconds
// they keep the mode within ten minutes on 2 cores: 2 layouts × 5 levels ×
// 5 repetitions × 2 clients = 100 runs of at most realMaxSeconds of sending
// plus about half a second of process start, warm-up and close each, and the two
// clusters' start and warm-up (one to two minutes). Async sends
// 1,000,000: at 200,000 a run lasted 0.2 s, mostly filling and draining the
// pipeline, and two runs of the cell an hour apart gave 1.31× and 1.04×.
var realRecords = recordCounts{c1: 3_000, c100: 40_000, more: 100_000, async: 1_000_000}

const realMaxSeconds = 2.5

// applyRealMode turns a plan into the -real mode: the real-broker layouts
// and, unless -full or the flags choose otherwise, kpush and franz-go at
// their defaults, 5 interleaved repetitions of every cell and records per
// run sized for real brokers (realRecords, realMaxSeconds).
func applyRealMode(p *plan, o *options) {
	p.layouts = realLayouts(kafkatest.KafkaVersion())
	if o.full {
		p.mode += ", real Kafka"
		return
	}
	p.mode = "real"
	if o.clients == "" {
		p.clients = []string{"kpush", "franz-go"}
	}
	if o.records == 0 {
		p.records = realRecords.of
	}
	p.reps = 5
	p.maxSeconds = realMaxSeconds
}

// isRealResults reports whether every layout of res ran on real Kafka.
func isRealResults(res *results) bool {
	for _, l := range res.Meta.Layouts {
		if l.Kafka == "" {
			return false
		}
	}
	return len(res.Meta.Layouts) > 0
}

// realJSON is where a doc's real-broker results are saved: beside the doc,
// apart from the kfake results, so each can be rerun without the other.
func realJSON(docPath string) string { return strings.TrimSuffix(docPath, ".md") + "-real.json" }

// writeRealDoc saves real-broker results beside the doc and rewrites the
// doc from its saved kfake results, whose text then ends with the
// real-broker section (writeRealSection).
func writeRealDoc(docPath string, res *results) error {
	b, err := json.MarshalIndent(res, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(realJSON(docPath), append(b, '\n'), 0o644); err != nil {
		return err
	}
	fakeJSON := strings.TrimSuffix(docPath, ".md") + ".json"
	fb, err := os.ReadFile(fakeJSON)
	if err != nil {
		return fmt.Errorf("real results saved to %s, but the doc is written from the kfake results too: %w (run the kfake benchmark first, or -out '')", realJSON(docPath), err)
	}
	fake := &results{}
	if err := json.Unmarshal(fb, fake); err != nil {
		return fmt.Errorf("%s: %w", fakeJSON, err)
	}
	if err := writeDoc(docPath, fake); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s and %s\n", realJSON(docPath), docPath)
	return nil
}

// writeRealSection writes the doc's real-broker section from the results
// saved beside it (realJSON), if any: which broker every number comes from,
// then the same tables and ratios as the kfake layouts.
func writeRealSection(w func(string, ...any), docPath string) error {
	name := realJSON(docPath)
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		w("\n## Real Apache Kafka\n\n")
		w("Not measured yet: every number above comes from kfake. `go run -C bench . -real` measures kpush and franz-go at their defaults on Apache Kafka (%s by default; 1 node, and 3 nodes with RF=3, min.insync.replicas=2 and acks=all), 5 interleaved repetitions of C=1, 100, 1000, 10000 and async, in about 9 minutes on 2 cores, and adds its tables here (saved in %s).\n", kafkatest.DefaultKafkaVersion, filepath.Base(name))
		return nil
	}
	if err != nil {
		return err
	}
	res := &results{}
	if err := json.Unmarshal(b, res); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	m := res.Meta
	w("\n## Real Apache Kafka\n\n")
	w("Written by `%s` (mode: %s) on %s", m.Command, m.Mode, m.Date.Format("2006-01-02 15:04 UTC"))
	if m.Commit != "" {
		w(" at commit %s", m.Commit)
	}
	w(", on %d CPUs (%s), %s, %s; raw results in [%s](%s). ", m.CPUs, orDash(m.CPUModel), m.Platform, m.GoVersion, filepath.Base(name), filepath.Base(name))
	w("Every number in this section comes from that run and these brokers, none from kfake:\n\n")
	for _, l := range m.Layouts {
		w("- **%s**: Apache Kafka %s (`org.apache.kafka:kafka_2.13` from Maven Central), %d node(s) in KRaft combined mode (broker and controller in one JVM) on 127.0.0.1", l, l.Kafka, l.Brokers)
		if l.Brokers > 1 {
			w(", replication factor %d, min.insync.replicas=2", l.Brokers)
		}
		w("; topic `%s` with %d partitions, retention.bytes 64 MiB, segment.bytes 16 MiB; every client acks=all.\n", benchTopic, l.Partitions)
	}
	w("\nBroker JVM: `%s`, started once per layout by the benchmark's parent process (`kafkatest.RealCluster`), so its CPU is not in the client's figures, but it shares the machine's CPUs with the client. ", strings.Join(realJVMOptions, " "))
	w("Records per run: ")
	for i, c := range m.Levels {
		if i > 0 {
			w(", ")
		}
		w("%s %d", c, m.Records[c.String()])
	}
	w(" (a run stops sending after %.1f s); median of %d interleaved repetitions, spread (min–max) in parentheses.\n\n", m.MaxSeconds, m.Reps)
	ix := indexRuns(res.Runs)
	if slices.Contains(m.Clients, "kpush") && slices.Contains(m.Clients, "franz-go") {
		writeAcrossLayouts(w, ix, m)
	}
	for _, l := range m.Layouts {
		w("### Real Kafka results: %s\n\n", l)
		writeLayoutResults(w, ix, m, l)
	}
	w("To rerun: `go run -C bench . -real` (about 9 minutes on 2 cores with the jars cached; needs Java 17+, and Maven the first time; `KPUSH_KAFKA_VERSION` picks the version). It rewrites this doc from the saved kfake results plus the new real-broker ones.\n")
	return nil
}
