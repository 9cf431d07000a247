// Command kafkalocal runs a real Apache Kafka cluster (KRaft, 1 or 3 nodes)
// on 127.0.0.1 until Ctrl-C or SIGTERM, fetching the broker from Maven
// Central on first use; and writes docs/compatibility.md from the
// real-broker tests run on several Kafka versions.
//
//	go run ./cmd/kafkalocal                        one node, newest Kafka
//	go run ./cmd/kafkalocal -nodes 3 -version 4.0.2
//	go run ./cmd/kafkalocal -provision -version 3.9.2
//	go run ./cmd/kafkalocal -matrix -out docs/compatibility.md
//
// Exit codes: 0 success, 1 failure, 2 usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/kpush/kpush/kafkatest"
)

// errUsage marks a usage error (exit code 2); the message was printed.
var errUsage = errors.New("usage error")

const usage = `kafkalocal: run a real Apache Kafka cluster on 127.0.0.1

Usage:
  kafkalocal [-nodes 1|3] [-version V] [-prop key=value ...] [-keep]
  kafkalocal -provision [-version V]
  kafkalocal -matrix [-faults] [-versions V,V,...] [-out FILE]

Needs Java 17+, and Maven the first time a version is used (jars are
cached in %s). Prints the bootstrap address, then runs until Ctrl-C or
SIGTERM, when it stops the brokers and removes their data.

Flags:
`

const examples = `
Examples:
  kafkalocal
  kafkalocal -nodes 3 -version 4.0.2 -prop producer.id.expiration.ms=10000
  kafkalocal -matrix -out docs/compatibility.md
  kafkalocal -matrix -faults -out docs/compatibility.md   # also the 3-node fault scenarios (~5 min per version)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// props is a repeatable key=value flag.
type props [][2]string

func (p *props) String() string { return fmt.Sprint(*p) }

func (p *props) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	*p = append(*p, [2]string{k, v})
	return nil
}

// run executes the command and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kafkalocal", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nodes := fs.Int("nodes", 1, "number of nodes: 1 or 3")
	version := fs.String("version", kafkatest.KafkaVersion(), "Apache Kafka version")
	keep := fs.Bool("keep", false, "keep the nodes' data and logs on exit")
	provision := fs.Bool("provision", false, "only fetch the broker jars and print their directory")
	matrix := fs.Bool("matrix", false, "run the real-broker tests on each of -versions and write -out")
	faults := fs.Bool("faults", false, "with -matrix, also run the fault scenarios, security and limits (./realfaults/, a 3-node cluster; about 5 minutes per version on 2 cores)")
	versions := fs.String("versions", strings.Join(matrixVersions, ","), "versions for -matrix")
	out := fs.String("out", "docs/compatibility.md", "file -matrix writes")
	var extra props
	fs.Var(&extra, "prop", "broker property key=value for every node (repeatable)")
	fs.Usage = func() {
		cache, _ := kafkatest.CacheDir()
		fmt.Fprintf(stderr, usage, cache)
		fs.PrintDefaults()
		fmt.Fprint(stderr, examples)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kafkalocal: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var err error
	switch {
	case *matrix:
		err = runMatrix(ctx, strings.Split(*versions, ","), *faults, *out, stdout, stderr)
	case *provision:
		var in *kafkatest.Install
		in, err = kafkatest.Provision(ctx, *version)
		if err == nil {
			fmt.Fprintln(stdout, in.JarsDir)
		}
	default:
		opts := []kafkatest.RealOption{kafkatest.WithNodes(*nodes), kafkatest.WithKafkaVersion(*version)}
		for _, kv := range extra {
			opts = append(opts, kafkatest.WithBrokerProperty(kv[0], kv[1]))
		}
		if *keep {
			opts = append(opts, kafkatest.WithKeepDirs())
		}
		err = serve(ctx, opts, stdout)
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, kafkatest.ErrRealConfig), errors.Is(err, kafkatest.ErrBadVersion):
		fmt.Fprintln(stderr, "kafkalocal:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "kafkalocal:", err)
		return 1
	}
}

// serve starts the cluster, prints its address and waits for ctx.
func serve(ctx context.Context, opts []kafkatest.RealOption, stdout io.Writer) error {
	if len(kafkatest.Seeds()) > 0 {
		return fmt.Errorf("%s is set; unset it to start a local cluster", kafkatest.EnvKafkaSeeds)
	}
	c, err := kafkatest.NewRealCluster(ctx, opts...)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "kafka %s, %d node(s)\n", c.Version(), c.Nodes())
	for i := range c.Nodes() {
		n, _ := c.Node(i)
		fmt.Fprintf(stdout, "node %d: 127.0.0.1:%d pid %d log %s\n", i, n.Port, c.PID(i), n.LogFile)
	}
	fmt.Fprintf(stdout, "bootstrap: %s\n", strings.Join(c.Addrs(), ","))
	fmt.Fprintln(stdout, "Ctrl-C to stop")
	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping")
	return c.Close()
}
