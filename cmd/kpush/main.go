// Command kpush is the kpush producer's command-line tool.
//
//	kpush dev        run a fake Kafka cluster on 127.0.0.1 until Ctrl-C
//	kpush produce    produce records from stdin or files (kcat-style flags)
//	kpush bench      benchmark the seed workload (starts a broker if -b is not given)
//	kpush metadata   list brokers, topics, partitions and leaders (kcat -L)
//	kpush version    print the version
//
// kcat's mode flags work as the first word: "kpush -P ..." is produce,
// "kpush -L ..." is metadata.
//
// Exit codes: 0 success, 1 the command failed (for produce: any record
// failed), 2 usage error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is the kpush version printed by "kpush version".
const version = "0.1.0-dev"

// errUsage marks a usage error (exit code 2); the message was printed.
var errUsage = errors.New("usage error")

const usage = `kpush: a Kafka producer's command-line tool

Usage:
  kpush dev [flags]                 run a fake Kafka cluster on 127.0.0.1 until Ctrl-C
  kpush produce [flags] [FILE ...]  produce records from stdin or files
  kpush bench [flags]               benchmark many goroutines each sending one record and waiting
  kpush metadata -b BROKERS         list brokers, topics, partitions and leaders
  kpush version                     print the version

kcat style: "kpush -P -b BROKERS -t TOPIC ..." is produce, "kpush -L ..."
is metadata.

Run "kpush COMMAND -h" for a command's flags and examples.

Exit status: 0 success, 1 the command failed (produce: a record failed),
2 usage error.

Examples:
  kpush bench
  kpush dev -port 9092 -topic orders:6
  printf 'k1\tv1\nk2\tv2\n' | kpush produce -b 127.0.0.1:9092 -t orders -K '\t'
`

func main() {
	// SIGTERM (kill, docker stop, systemd) stops as Ctrl-C does, so that
	// "kpush dev --tls" removes its private keys and produce reports every
	// record.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes one command and returns the process exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd := args[0]
	if strings.HasPrefix(cmd, "-") && cmd != "-h" && cmd != "--help" {
		cmd = kcatMode(args)
		if strings.HasPrefix(cmd, "-") {
			fmt.Fprintf(stderr, "kpush: kcat's %s is not supported: %s\n", cmd, kcatUnsupported[cmd[1]])
			return 2
		}
		if cmd == "" {
			fmt.Fprintf(stderr, "kpush: %s: start with a command (produce, metadata, ...) or a kcat mode (-P, -L); see 'kpush -h'\n", args[0])
			return 2
		}
		args = append([]string{cmd}, args...)
	}
	var err error
	switch cmd {
	case "bench":
		err = runBench(ctx, args[1:], stdout, stderr)
	case "dev":
		err = runDev(ctx, args[1:], stdout, stderr)
	case "produce":
		err = runProduce(ctx, args[1:], stdin, stdout, stderr)
	case "metadata":
		err = runMetadata(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "kpush", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "kpush: unknown command %q; see 'kpush -h'\n", args[0])
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintln(stderr, "kpush:", err)
		return 1
	}
}

// kcatMode finds kcat's mode flag among args: "produce" for -P,
// "metadata" for -L; the flag itself for an unsupported mode (-C, -G,
// -Q); "" if none.
func kcatMode(args []string) string {
	for _, a := range args {
		switch a {
		case "-P":
			return "produce"
		case "-L":
			return "metadata"
		case "-C", "-G", "-Q":
			return a
		case "--":
			return ""
		}
	}
	return ""
}
