package main

// "kpush produce": the command, its flags and the send loop. The -X
// properties are in produce_props.go, reading and parsing the input in
// produce_input.go, counting and the summary in produce_report.go.
//
// Goroutines: the reader goroutine (readInputs) reads and parses the input
// and hands batches of items to the command's goroutine, which sends them
// with SendAsync; producer callbacks run on kpush's goroutines and only
// touch the tally (its mutex) and item.done. The reader goroutine exits at
// the end of the input or when stop is closed; it can outlive runProduce
// only while blocked reading an input that never ends (stdin after Ctrl-C).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kpush/kpush"
)

const produceUsage = `Usage: kpush produce -b BROKERS -t TOPIC [flags] [FILE ...]

Produces the records read from the FILEs in turn ("-" or none: stdin), one
record per line by default, and prints a delivery summary on stderr. Flags
follow kcat's producer mode where kcat has them (-P is accepted and
ignored); flags come before the FILEs.

Input formats (--format):
  line  each record is the bytes up to the delimiter (-D, default \n),
        taken as they are: binary input is fine, a \r is kept, an empty
        line is an empty value. With -K, "key<delim>value"; a line
        without the key delimiter has no key.
  json  one JSON object per line (blank lines are skipped), e.g.
          {"key": "k1", "value": "v1", "headers": {"h": "x"}, "partition": 2}
        key, value: strings; key_b64, value_b64 instead for any bytes,
          in standard padded base64. No key: no key. No value, or
          "value": null: a null value (a tombstone).
        headers: an object (order and duplicates kept), or a list
          [{"key": "h", "value": "x"}, {"key": "h", "value_b64": "AAE="}].
          -H headers come first.
        partition: the partition; -1 or none: -p, else the partitioner.
        source, error: ignored (--failed-out writes them).

-X properties (Kafka producer property names):
  acks                    all (or -1), 1 or 0                   default all
  batch.size              largest batch, and so largest record,
                          in bytes (1024 to 1073741824)         default 1048576
  client.id               client id sent to the brokers         default kpush
  compression.type        none, gzip, snappy, lz4, zstd (alias
                          compression.codec; same as -z)        default none
  enable.idempotence      true or false (true needs acks=all)   default true
  linger.ms               wait for more records before sending  default 0
  message.timeout.ms      bound on each record's delivery,
                          retries included (alias
                          delivery.timeout.ms)                  default 30000
  request.timeout.ms      bound on one produce request          default min(30000,
                                                                message.timeout.ms - linger.ms)
` + securityHelp + `
Delivery and failures:
  Records are sent asynchronously; at most 64 MiB are buffered at once.
  Every failed record is counted under its reason in the summary, with
  its input position (FILE:LINE, line = record number). --failed-out FILE
  writes each failed record as a json line (-H headers and the partition
  included) so nothing is lost: replay it with --format json, without -H.
  A record larger than batch.size fails; a line over 64 MiB fails and is
  dropped unread (it is not in --failed-out). If no broker gives the
  topic's metadata within min(10s, message.timeout.ms/2) of the first
  record (unreachable broker), or the topic does not exist, every
  remaining record fails at once with that reason. A malformed json line
  stops the run (exit 1) unless --skip-bad, which skips it, reports its
  line and counts it (skipped lines alone do not fail the run). Ctrl-C
  stops reading and gives records in flight 5s; the rest fail.

Exit status: 0 every record was sent (or the input was empty), 1 a record
failed, the input could not be read or was malformed, or Ctrl-C; 2 usage
error.

Examples:
  printf 'hello\nworld\n' | kpush produce -b localhost:9092 -t greetings
  kpush produce -b localhost:9092 -t orders -K '\t' -H source=import orders.tsv
  kpush produce -b localhost:9092 -t orders -p 0 -z zstd -X linger.ms=5 -X acks=1 a.txt b.txt
  kpush produce -b localhost:9092 -t events -D '\0' events.bin
  kpush produce -b localhost:9092 -t events --format json --skip-bad --failed-out failed.jsonl events.jsonl
  kpush produce -b localhost:9092 -t events --format json failed.jsonl   # replay the failures
  KPUSH_SASL_PASSWORD=... kpush produce -b broker:9093 -t events -X security.protocol=SASL_SSL \
      -X sasl.mechanism=SCRAM-SHA-512 -X sasl.username=app -X ssl.ca.location=ca.pem events.txt

Flags:
`

// produceConfig is the parsed command line.
type produceConfig struct {
	brokers   []string
	topic     string
	partition int32 // -1: the partitioner
	keyDelim  []byte
	recDelim  []byte
	headers   []kpush.Header
	json      bool
	skipBad   bool
	failedOut string
	files     []string
	props     producerProps
}

func parseProduceFlags(args []string, stderr io.Writer) (*produceConfig, error) {
	cfg := &produceConfig{props: defaultProps()}
	fs := flag.NewFlagSet("produce", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, produceUsage)
		fs.PrintDefaults()
	}
	brokers := fs.String("b", "", "comma-separated seed brokers, host:port (required)")
	fs.StringVar(&cfg.topic, "t", "", "topic to produce to (required)")
	partition := fs.Int("p", -1, "partition for every record (-1: the partitioner: murmur2 of the key, sticky without a key)")
	keyDelim := fs.String("K", "", `key delimiter: each record is "key<delim>value" (escapes: \n \r \t \0 \\ \xHH)`)
	recDelim := fs.String("D", "", "record delimiter (escapes as -K; default newline)")
	fs.Func("H", "header name=value added to every record; repeatable", func(s string) error {
		name, value, ok := strings.Cut(s, "=")
		if !ok {
			return fmt.Errorf("%q is not name=value", s)
		}
		cfg.headers = append(cfg.headers, kpush.Header{Key: name, Value: []byte(value)})
		return nil
	})
	fs.Func("z", "compression codec: none, gzip, snappy, lz4, zstd", func(s string) error {
		return cfg.props.set("compression.type", s)
	})
	xErr := xFlag(fs, "producer property prop=value (see above); repeatable", cfg.props.set)
	format := fs.String("format", "line", "input format: line or json")
	fs.BoolVar(&cfg.skipBad, "skip-bad", false, "skip malformed json lines (reported with their line numbers) instead of stopping")
	fs.StringVar(&cfg.failedOut, "failed-out", "", "write failed records to this file as json lines")
	fs.Bool("P", false, "producer mode (ignored; for kcat compatibility)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		return nil, errUsage
	}
	bad := func(format string, a ...any) (*produceConfig, error) {
		fmt.Fprintf(stderr, "kpush produce: "+format+"\n", a...)
		return nil, errUsage
	}
	if *xErr != nil {
		return bad("%v", *xErr)
	}
	if *brokers == "" {
		return bad("-b is required (e.g. -b localhost:9092)")
	}
	for _, b := range strings.Split(*brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			cfg.brokers = append(cfg.brokers, b)
		}
	}
	if cfg.topic == "" {
		return bad("-t is required")
	}
	if *partition < -1 || *partition > 1<<31-1 {
		return bad("-p: %d is not a partition (or -1)", *partition)
	}
	cfg.partition = int32(*partition)
	var err error
	if *keyDelim != "" {
		if cfg.keyDelim, err = unescape(*keyDelim); err != nil {
			return bad("-K: %v", err)
		}
	}
	cfg.recDelim = []byte{'\n'}
	if *recDelim != "" {
		if cfg.recDelim, err = unescape(*recDelim); err != nil {
			return bad("-D: %v", err)
		}
	}
	switch *format {
	case "line":
	case "json":
		cfg.json = true
	default:
		return bad("--format: %q is not line or json", *format)
	}
	if cfg.skipBad && !cfg.json {
		return bad("--skip-bad needs --format json (line input has no malformed records)")
	}
	cfg.files = fs.Args()
	if err := cfg.props.resolve(); err != nil {
		return bad("%v", err)
	}
	return cfg, nil
}

// producer is one kpush producer of the run.
type producer struct {
	p     *kpush.Producer
	known atomic.Bool // a record got past the metadata wait
}

// sender sends items and tallies their outcomes.
type sender struct {
	cfg      *produceConfig
	tally    *tally
	metaWait time.Duration
	auto     *producer // partitioner; nil with -p
	manual   *producer // ManualPartitioner; created on first use
	read     atomic.Int64
}

// errMetadataWait is the cause of the first record's bounded context.
var errMetadataWait = errors.New("metadata wait over")

func newProducer(cfg *produceConfig, manual bool, stderr io.Writer) (*producer, error) {
	p, err := kpush.New(cfg.props.options(cfg.brokers, manual)...)
	var ce *kpush.ConfigError
	if errors.As(err, &ce) {
		name := optionFlags[ce.Option]
		if name == "" {
			name = ce.Option
		}
		fmt.Fprintf(stderr, "kpush produce: %s: %s\n", name, ce.Reason)
		return nil, errUsage
	}
	if err != nil {
		return nil, err
	}
	return &producer{p: p}, nil
}

// send hands one item to a producer; its outcome reaches the tally.
func (s *sender) send(ctx context.Context, it *item) {
	if it.tooLong > 0 {
		s.tally.fail(it, fmt.Errorf("line longer than %d bytes (dropped unread, not in --failed-out)", maxLineBytes))
		return
	}
	if err := s.tally.fatalErr(); err != nil {
		s.tally.fail(it, err)
		return
	}
	pr := s.auto
	if it.explicit {
		if s.manual == nil {
			var err error
			if s.manual, err = newProducer(s.cfg, true, io.Discard); err != nil {
				s.tally.fail(it, err) // cannot happen: the options are auto's
				return
			}
		}
		pr = s.manual
	}
	sctx := ctx
	if !pr.known.Load() {
		mctx, cancel := context.WithTimeoutCause(ctx, s.metaWait, errMetadataWait)
		defer cancel() // ctx is only watched until SendAsync returns
		sctx, it.bounded = mctx, true
	}
	pr.p.SendAsync(sctx, &it.rec, func(_ kpush.Result, err error) {
		it.done.Store(true)
		if err == nil {
			pr.known.Store(true)
			s.tally.sent.Add(1)
			return
		}
		switch {
		case it.bounded && errors.Is(err, context.DeadlineExceeded) && errors.Is(context.Cause(sctx), errMetadataWait):
			err = s.noMetadata()
			s.tally.setFatal(err)
		case errors.Is(err, kpush.ErrUnknownTopic), errors.Is(err, kpush.ErrTopicAuthorizationFailed),
			errors.Is(err, kpush.ErrAuthentication):
			s.tally.setFatal(err)
		}
		s.tally.fail(it, err)
	})
	if !it.done.Load() {
		pr.known.Store(true) // buffered, so the topic's metadata is known
	}
}

// noMetadata explains a first record that got no metadata in time: it
// dials the brokers to tell an unreachable broker from a silent one.
func (s *sender) noMetadata() error {
	var dialErrs []string
	for _, b := range s.cfg.brokers {
		c, err := net.DialTimeout("tcp", b, 2*time.Second)
		if err != nil {
			dialErrs = append(dialErrs, err.Error())
			continue
		}
		c.Close()
		return &kpush.ProduceError{Topic: s.cfg.topic, Partition: -1,
			Err: fmt.Errorf("no metadata for the topic within %v, though %s accepts connections", s.metaWait, b)}
	}
	return &kpush.ProduceError{Topic: s.cfg.topic, Partition: -1,
		Err: fmt.Errorf("%w within %v: %s", kpush.ErrNoBroker, s.metaWait, strings.Join(dialErrs, "; "))}
}

// close waits for every record's outcome: at most message.timeout.ms, or
// a few seconds once ctx is done (what is left then fails).
func (s *sender) close(ctx context.Context) {
	var wg sync.WaitGroup
	for _, pr := range []*producer{s.auto, s.manual} {
		if pr == nil {
			continue
		}
		wg.Go(func() {
			pr.p.Flush(ctx)
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			pr.p.Close(cctx)
		})
	}
	wg.Wait()
}

// runProduce is "kpush produce".
func runProduce(ctx context.Context, args []string, stdin io.Reader, _, stderr io.Writer) error {
	cfg, err := parseProduceFlags(args, stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	ins, closeInputs, err := openInputs(cfg.files, stdin)
	if err != nil {
		return err
	}
	defer closeInputs()
	t, err := newTally(cfg, stderr)
	if err != nil {
		return err
	}
	s := &sender{cfg: cfg, tally: t, metaWait: cfg.props.metadataWait()}
	if cfg.partition >= 0 {
		s.manual, err = newProducer(cfg, true, stderr)
	} else {
		s.auto, err = newProducer(cfg, false, stderr)
	}
	if err != nil {
		t.closeFailedOut()
		return err
	}

	start := time.Now()
	stopProgress := startProgress(stderr, ins, &s.read, t)
	batches := make(chan []*item, 16)
	stop := make(chan struct{})
	var readErr error
	go func() {
		readErr = s.readInputs(ins, batches, stop)
		close(batches)
	}()
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			runErr = fmt.Errorf("interrupted: %w", ctx.Err())
			break loop
		case batch, ok := <-batches:
			if !ok {
				runErr = readErr // written before batches was closed
				break loop
			}
			for _, it := range batch {
				if it.bad != nil {
					if !cfg.skipBad {
						runErr = fmt.Errorf("%s: %v (stopped; --skip-bad skips such lines)", it.where(), it.bad)
						break loop
					}
					t.skip(it)
					continue
				}
				s.send(ctx, it)
			}
		}
	}
	close(stop)
	s.close(ctx)
	stopProgress()
	elapsed := time.Since(start)
	outErr := t.closeFailedOut()
	t.writeSummary(stderr, elapsed)
	sent, failed, _ := t.counts()
	switch {
	case runErr != nil:
		return runErr
	case outErr != nil:
		return fmt.Errorf("--failed-out: %w", outErr)
	case failed > 0:
		msg := fmt.Sprintf("%d of %d records failed", failed, sent+failed)
		if fatal := t.fatalErr(); fatal != nil {
			msg += " (" + reasonText(fatal, cfg.props.batchBytes) + ")"
		}
		return errors.New(msg)
	}
	return nil
}
