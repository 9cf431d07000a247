// Command bench measures kpush side by side with the popular Go Kafka
// producers (franz-go, sarama, segmentio/kafka-go, confluent-kafka-go) on
// the same fake broker in one run, and writes docs/benchmarks.md with a
// table, kpush/franz-go ratios per cell, the docs/design.md targets checked
// against the data, and charts.
//
// It is its own module (see go.mod) so the peers never enter kpush's
// dependency graph. Run it from the repository root:
//
//	go run -C bench . -quick   # ~2 minutes: 1 broker, 12 partitions, 100 B, keyless
//	go run -C bench . -headline  # the README headline cells (~4 minutes quiet, up to 10 busy)
//	go run -C bench . -full    # every cell of issue 5 (about an hour)
//
// Process model: this binary plays three roles. The parent (no role flag)
// plans the cells and, for each run, starts a fresh broker process
// (-role=broker, a kfake cluster from kpush's kafkatest package on
// 127.0.0.1) and a client process (-role=client) that runs one client on
// one workload and prints one JSON line. So every rusage figure (CPU, peak
// RSS) and the Go allocation count belong to one client alone, and broker
// state never carries over from one run to the next.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	role := flag.String("role", "", "internal: broker or client (set by the parent when it re-executes itself)")
	o := defineFlags(flag.CommandLine)
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), usage)
		flag.PrintDefaults()
	}
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch *role {
	case "":
		err = runParent(ctx, o)
	case "broker":
		err = runBroker(ctx, o.spec, o.cpuProfile, o.trace)
	case "client":
		err = runClient(o.spec, profiles{cpu: o.cpuProfile, mem: o.memProfile, trace: o.trace})
	default:
		err = fmt.Errorf("unknown -role %q", *role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

const usage = `Usage: go run -C bench . [flags]     (from the repository root)

Runs kpush and its peers on the same fake Kafka cluster (a separate
process, fresh for every run), interleaved, and writes docs/benchmarks.md
plus the charts it embeds. Compare ratios within one run: the numbers of
two runs on a shared machine are not comparable.

Examples:
  go run -C bench . -headline   # the README headline: kpush vs franz-go at defaults, ~4 minutes quiet
  go run -C bench . -quick
  go run -C bench . -full
  go run -C bench . -quick -clients kpush,franz-go -reps 5
  go run -C bench . -quick -clients kpush -c 10000 -cpuprofile /tmp/prof -out ''
  go run -C bench . -clients kpush -c async -n 1000000 -memprofile /tmp/prof -out ''
  go run -C bench . -clients kpush,franz-go -s 1024 -c async -n 300000 -out ''
  go run -C bench . -replot ../docs/benchmarks.json   # rewrite the doc from saved results

Flags:
`
