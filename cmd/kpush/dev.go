package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/kpush/kpush/kafkatest"
)

const devUsage = `Usage: kpush dev [flags]

Runs a fake Kafka cluster (franz-go's kfake, through kpush's kafkatest
package) in this process on 127.0.0.1 until interrupted (Ctrl-C). It speaks
the Kafka protocol, so any client (kcat, librdkafka, franz-go, Java) can use
it. Records live in memory only and are gone when it stops.

It prints the bootstrap addresses on stdout in one line, then the topics:

  bootstrap: 127.0.0.1:PORT[,127.0.0.1:PORT...]
  topic: NAME partitions=N

Examples:
  kpush dev
  kpush dev -port 9092 -brokers 3 -topic orders:12 -topic audit:1
  kpush dev -topic events:6 -auto-create 3
  # then, in another terminal:
  kpush produce -b 127.0.0.1:9092 -t orders orders.txt
  kcat -C -b 127.0.0.1:9092 -t orders -e

Flags:
`

// devTopic is one -topic flag.
type devTopic struct {
	name       string
	partitions int32
}

type devConfig struct {
	port       int
	brokers    int
	topics     []devTopic
	autoCreate int
}

func parseDevFlags(args []string, stderr io.Writer) (*devConfig, error) {
	cfg := &devConfig{}
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, devUsage)
		fs.PrintDefaults()
	}
	fs.IntVar(&cfg.port, "port", 0, "port of the first broker; the others take the next ports (0: random free ports)")
	fs.IntVar(&cfg.brokers, "brokers", 1, "number of brokers")
	fs.IntVar(&cfg.autoCreate, "auto-create", 0, "create a missing topic with this many partitions when a client's metadata request asks for it (kcat and librdkafka producers do, kpush does not; 0: off)")
	fs.Func("topic", `topic to create, "name:partitions" or "name" (1 partition); repeatable (default "test:3")`,
		func(s string) error {
			t, err := parseDevTopic(s)
			if err != nil {
				return err
			}
			for _, old := range cfg.topics {
				if old.name == t.name {
					return fmt.Errorf("topic %q given twice", t.name)
				}
			}
			cfg.topics = append(cfg.topics, t)
			return nil
		})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		return nil, errUsage
	}
	bad := func(format string, a ...any) (*devConfig, error) {
		fmt.Fprintf(stderr, "kpush dev: "+format+"\n", a...)
		return nil, errUsage
	}
	if fs.NArg() > 0 {
		return bad("unexpected argument %q", fs.Arg(0))
	}
	if cfg.brokers < 1 || cfg.brokers > 100 {
		return bad("-brokers: %d is not between 1 and 100", cfg.brokers)
	}
	if cfg.port < 0 || cfg.port > 65535 || (cfg.port > 0 && cfg.port+cfg.brokers-1 > 65535) {
		return bad("-port: %d is not a port for %d brokers (0 to 65535)", cfg.port, cfg.brokers)
	}
	if cfg.autoCreate < 0 || cfg.autoCreate > 10000 {
		return bad("-auto-create: %d is not between 0 and 10000", cfg.autoCreate)
	}
	if len(cfg.topics) == 0 {
		cfg.topics = []devTopic{{"test", 3}}
	}
	return cfg, nil
}

// parseDevTopic parses "name:partitions" or "name".
func parseDevTopic(s string) (devTopic, error) {
	name, count, hasCount := strings.Cut(s, ":")
	t := devTopic{name: name, partitions: 1}
	if hasCount {
		n, err := strconv.Atoi(count)
		if err != nil || n < 1 || n > 10000 {
			return t, fmt.Errorf("%q: partitions must be a number from 1 to 10000", s)
		}
		t.partitions = int32(n)
	}
	if err := checkTopicName(name); err != nil {
		return t, err
	}
	return t, nil
}

// checkTopicName applies Kafka's rules for topic names.
func checkTopicName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > 249 {
		return fmt.Errorf("%q is not a valid topic name", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("topic name %q has %q; Kafka allows only letters, digits, '.', '_' and '-'", name, r)
		}
	}
	return nil
}

// runDev runs the cluster until ctx is done, then closes it.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseDevFlags(args, stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	opts := []kafkatest.Option{kafkatest.WithBrokers(cfg.brokers)}
	if cfg.port > 0 {
		ports := make([]int, cfg.brokers)
		for i := range ports {
			ports[i] = cfg.port + i
		}
		opts = append(opts, kafkatest.WithPorts(ports...))
	}
	for _, t := range cfg.topics {
		opts = append(opts, kafkatest.WithTopic(t.name, t.partitions))
	}
	if cfg.autoCreate > 0 {
		opts = append(opts, kafkatest.WithAutoCreateTopics(int32(cfg.autoCreate)))
	}
	c, err := kafkatest.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	fmt.Fprintf(stdout, "bootstrap: %s\n", strings.Join(c.Addrs(), ","))
	for _, t := range cfg.topics {
		fmt.Fprintf(stdout, "topic: %s partitions=%d\n", t.name, t.partitions)
	}
	if cfg.autoCreate > 0 {
		fmt.Fprintf(stdout, "auto-create: partitions=%d\n", cfg.autoCreate)
	}
	fmt.Fprintf(stderr, "kpush dev: %d broker(s) running; press Ctrl-C to stop\n", cfg.brokers)
	<-ctx.Done()
	if err := c.Close(); err != nil {
		return fmt.Errorf("dev: stop: %w", err)
	}
	fmt.Fprintln(stderr, "kpush dev: stopped")
	return nil
}
