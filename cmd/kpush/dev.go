package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/kpush/kpush/kafkatest"
)

const devUsage = `Usage: kpush dev [flags]

Runs a fake Kafka cluster (franz-go's kfake, through kpush's kafkatest
package) in this process on 127.0.0.1 until interrupted (Ctrl-C). It speaks
the Kafka protocol, so any client (kcat, librdkafka, franz-go, Java) can use
it. Records live in memory only and are gone when it stops.

It prints the bootstrap addresses on stdout in one line, then the
security settings clients need, if any, then the topics:

  bootstrap: 127.0.0.1:PORT[,127.0.0.1:PORT...]
  security.protocol: SASL_SSL
  sasl: user=NAME mechanism=MECH
  ssl.ca.location: /tmp/kpush-dev-tls-.../ca.pem
  topic: NAME partitions=N

--sasl requires clients to authenticate (PLAIN, SCRAM-SHA-256 or
SCRAM-SHA-512; no OAUTHBEARER); a client with wrong credentials has its
connection closed. --tls makes a throwaway CA and a server certificate for
127.0.0.1, ::1 and localhost in a temporary directory (ca.pem, server.pem,
server-key.pem, and client.pem/client-key.pem for mutual TLS tests),
removed when kpush dev stops; clients trust ca.pem. --tls-host NAME makes
the server certificate for NAME instead (repeatable), to try a client's
host name verification against a broker it reaches at 127.0.0.1.

Examples:
  kpush dev
  kpush dev -port 9092 -brokers 3 -topic orders:12 -topic audit:1
  kpush dev -topic events:6 -auto-create 3
  # then, in another terminal:
  kpush produce -b 127.0.0.1:9092 -t orders orders.txt
  kcat -C -b 127.0.0.1:9092 -t orders -e

  kpush dev -port 9093 -topic orders:3 --tls --sasl alice:secret,SCRAM-SHA-256
  # prints ssl.ca.location: /tmp/kpush-dev-tls-XXXX/ca.pem; then:
  kcat -C -b 127.0.0.1:9093 -t orders -e -X security.protocol=SASL_SSL \
      -X sasl.mechanisms=SCRAM-SHA-256 -X sasl.username=alice -X sasl.password=secret \
      -X ssl.ca.location=/tmp/kpush-dev-tls-XXXX/ca.pem

Flags:
`

// devTopic is one -topic flag.
type devTopic struct {
	name       string
	partitions int32
}

// devUser is one --sasl flag.
type devUser struct{ user, pass, mechanism string }

type devConfig struct {
	port       int
	brokers    int
	topics     []devTopic
	autoCreate int
	users      []devUser
	tls        bool
	tlsHosts   []string
}

func parseDevFlags(args []string, stderr io.Writer) (*devConfig, error) {
	cfg := &devConfig{brokers: 1}
	opts := &optionSet{cmd: "dev"}
	var saslErr error
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
	opts.fn(0, "port", "PORT", "port of the first broker; the others take the next ports (default 0: random free ports)", num(&cfg.port))
	opts.fn(0, "brokers", "N", "number of brokers (default 1)", num(&cfg.brokers))
	opts.fn(0, "auto-create", "N", "create a missing topic with N partitions when a client's metadata request asks for it (kcat and librdkafka producers do, kpush does not; default 0: off)", num(&cfg.autoCreate))
	opts.fn(0, "topic", "NAME[:PARTITIONS]", `topic to create (1 partition without a count); repeatable (default test:3)`,
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
	opts.fn(0, "sasl", "USER:PASSWORD[,MECH]", `require SASL: PLAIN, SCRAM-SHA-256 (default) or SCRAM-SHA-512; repeatable`,
		func(s string) error {
			// Reported after parsing, without the value (a password).
			u, err := parseDevUser(s)
			if err != nil && saslErr == nil {
				saslErr = err
			}
			cfg.users = append(cfg.users, u)
			return nil
		})
	opts.boolean(0, "tls", "serve TLS only, with a throwaway CA written to a temporary directory (its path is printed)", &cfg.tls)
	opts.fn(0, "tls-host", "NAME", "with --tls: a name (DNS name or IP address) the server certificate is for, instead of 127.0.0.1, ::1 and localhost; repeatable (to test a client's host name verification)",
		func(s string) error {
			if s == "" {
				return fmt.Errorf("empty host name")
			}
			cfg.tlsHosts = append(cfg.tlsHosts, s)
			return nil
		})
	rest, err := opts.parse(args)
	if errors.Is(err, errHelp) {
		fmt.Fprint(stderr, devUsage)
		opts.printOptions(stderr)
		return nil, errHelp
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, err
	}
	bad := func(format string, a ...any) (*devConfig, error) {
		err := opts.errorf(format, a...)
		fmt.Fprintln(stderr, err)
		return nil, err
	}
	if len(rest) > 0 {
		return bad("unexpected argument %q", rest[0])
	}
	if saslErr != nil {
		return bad("--sasl: %v", saslErr)
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
	if len(cfg.tlsHosts) > 0 && !cfg.tls {
		return bad("--tls-host needs --tls")
	}
	if len(cfg.topics) == 0 {
		cfg.topics = []devTopic{{"test", 3}}
	}
	return cfg, nil
}

// parseDevUser parses "user:password[,MECHANISM]". Errors never repeat the
// password.
func parseDevUser(s string) (devUser, error) {
	u := devUser{mechanism: kafkatest.SASLScramSHA256}
	rest, ok := "", false
	u.user, rest, ok = strings.Cut(s, ":")
	if !ok || u.user == "" {
		return u, errors.New(`not "user:password[,MECHANISM]"`)
	}
	u.pass = rest
	if i := strings.LastIndex(rest, ","); i >= 0 {
		switch m := strings.ToUpper(rest[i+1:]); m {
		case kafkatest.SASLPlain, kafkatest.SASLScramSHA256, kafkatest.SASLScramSHA512:
			u.pass, u.mechanism = rest[:i], m
		}
	}
	if u.pass == "" {
		return u, fmt.Errorf("user %q has an empty password", u.user)
	}
	return u, nil
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

// printDevSecurity prints what clients need to connect (protocol, users,
// the CA file it writes for --tls) and returns a function removing the
// files.
func printDevSecurity(cfg *devConfig, c *kafkatest.Cluster, stdout, stderr io.Writer) (cleanup func(), err error) {
	cleanup = func() {}
	proto := map[[2]bool]string{{false, true}: "SSL", {true, false}: "SASL_PLAINTEXT", {true, true}: "SASL_SSL"}[[2]bool{len(cfg.users) > 0, cfg.tls}]
	if proto == "" {
		return cleanup, nil
	}
	fmt.Fprintf(stdout, "security.protocol: %s\n", proto)
	for _, u := range cfg.users {
		fmt.Fprintf(stdout, "sasl: user=%s mechanism=%s\n", u.user, u.mechanism)
	}
	var caFlag string
	if cfg.tls {
		dir, err := os.MkdirTemp("", "kpush-dev-tls-")
		if err != nil {
			return cleanup, err
		}
		cleanup = func() { os.RemoveAll(dir) }
		f, err := c.WriteTLSFiles(dir)
		if err != nil {
			cleanup()
			return func() {}, err
		}
		fmt.Fprintf(stdout, "ssl.ca.location: %s\n", f.CA)
		caFlag = " -X ssl.ca.location=" + f.CA
	}
	var saslFlags string
	if len(cfg.users) > 0 {
		saslFlags = fmt.Sprintf(" -X sasl.mechanisms=%s -X sasl.username=%s -X sasl.password=...", cfg.users[0].mechanism, cfg.users[0].user)
	}
	fmt.Fprintf(stderr, "kpush dev: connect with: kcat -b %s -X security.protocol=%s%s%s -L\n",
		strings.Join(c.Addrs(), ","), proto, saslFlags, caFlag)
	return cleanup, nil
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
	for _, u := range cfg.users {
		opts = append(opts, kafkatest.WithSASL(u.mechanism, u.user, u.pass))
	}
	if cfg.tls {
		opts = append(opts, kafkatest.WithTLS(false))
		if len(cfg.tlsHosts) > 0 {
			opts = append(opts, kafkatest.WithTLSHosts(cfg.tlsHosts...))
		}
	}
	c, err := kafkatest.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	fmt.Fprintf(stdout, "bootstrap: %s\n", strings.Join(c.Addrs(), ","))
	cleanup, err := printDevSecurity(cfg, c, stdout, stderr)
	if err != nil {
		c.Close()
		return fmt.Errorf("dev: %w", err)
	}
	defer cleanup()
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
