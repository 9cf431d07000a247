package main

// "kpush produce": the command, its flags and the send loop. The -X
// properties are in produce_props.go, reading and parsing the input in
// produce_input.go, sending in produce_send.go, counting and the summary
// in produce_report.go, the broker watch in produce_watch.go and the
// progress line in produce_progress.go.
//
// Goroutines: the reader goroutine (readInputs) reads and parses the input
// and hands batches of items to the command's goroutine, which sends them
// with SendAsync; producer callbacks run on kpush's goroutines and only
// touch the tally (its mutex), the sender's atomics and the item's
// done/unsent fields. The watch and progress goroutines are stopped
// before runProduce returns. The reader goroutine exits at
// the end of the input or when stop is closed; it can outlive runProduce
// only while blocked reading an input that never ends (stdin after Ctrl-C).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kpush/kpush"
)

const produceUsage = `Usage: kpush produce -b BROKERS -t TOPIC [flags] [FILE ...]

Produces the records read from the FILEs in turn ("-" or none: stdin), one
record per line by default, and prints a delivery summary on stderr. Flags
follow kcat's producer mode where kcat has them, in getopt forms: -K:,
-tTOPIC, -b127.0.0.1:9092, -Pq, and flags after the FILEs; "kpush -P ..."
works too. Go forms also work: -t=TOPIC, --topic TOPIC, -failed-out=F.

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
  its input position (FILE:LINE, line = record number). A failure is
  either "not written" (the broker never took the record: replaying it
  cannot duplicate it) or "outcome unknown" (it was sent but not
  acknowledged, e.g. the broker died: it may be in the topic). With
  --failed-out FILE the not-written records go to FILE and the
  outcome-unknown ones to --unknown-out (default FILE.unknown.jsonl for
  FILE.jsonl), as json lines (-H headers and the partition included);
  each file is created only if a record goes in it, and a file that
  already holds records is refused, never overwritten. Replay FILE with
  --format json, without -H; check the topic before replaying the other.
  A record larger than batch.size fails; a line over 64 MiB fails and is
  dropped unread (it is not in --failed-out). If no broker gives the
  topic's metadata within min(10s, message.timeout.ms/2) of the first
  record (unreachable broker), or the topic does not exist, every
  remaining record fails at once with that reason. A malformed json line
  stops the run (exit 1) unless --skip-bad, which skips it, reports its
  line and counts it (skipped lines alone do not fail the run). Ctrl-C
  stops reading and gives records in flight 5s; the rest fail.

Dead brokers and resuming:
  When nothing is acknowledged for 2s the progress line (or, off a
  terminal, one stderr line) says which brokers are unreachable, since
  when, how many records wait and when they fail. Once records fail
  (after message.timeout.ms) while no broker is reachable, produce stops
  reading and exits 1 within about message.timeout.ms, unless
  --keep-going. Whenever reading stops early (dead broker, Ctrl-C, -c,
  a malformed line) the summary gives the position, FILE:LINE:OFFSET;
  run the same command with --resume FILE:LINE:OFFSET to send the rest
  (and replay --failed-out for the records that failed before it).

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
  kpush -P -b127.0.0.1:9092 -tevents -K: events.txt -c 100 -q
  kpush produce -b localhost:9092 -t events --resume events.txt:120001:8812345 events.txt
  KPUSH_SASL_PASSWORD=... kpush produce -b broker:9093 -t events -X security.protocol=SASL_SSL \
      -X sasl.mechanism=SCRAM-SHA-512 -X sasl.username=app -X ssl.ca.location=ca.pem events.txt

Flags:
`

// produceConfig is the parsed command line.
type produceConfig struct {
	brokers    []string
	topic      string
	partition  int32 // -1: the partitioner
	keyDelim   []byte
	recDelim   []byte
	fixedKey   []byte // -k; nil: none
	nullEmpty  bool   // -Z
	headers    []kpush.Header
	json       bool
	skipBad    bool
	failedOut  string
	unknownOut string
	files      []string
	props      producerProps
	count      int64 // -c; 0: no limit
	tee        bool  // -T
	quiet      bool  // -q
	keepGoing  bool
	resume     *position // --resume; nil: from the start
	// --metrics-addr (metrics.go); metrics is set by runProduce when given.
	metricsAddr string
	metrics     *cliMetrics
}

// kcatUnsupported lists kcat's letters that kpush does not accept, with
// what to use instead; the help prints it and the parser quotes it.
var kcatUnsupported = map[byte]string{
	'C': "kpush only produces; consume with kcat -C or kafka-console-consumer",
	'G': "kpush only produces; consume with kcat -G",
	'Q': "kpush only produces; query offsets with kcat -Q",
	'o': "a consumer option; kpush only produces",
	'e': "a consumer option; kpush exits at the end of its input anyway",
	'f': "a consumer option; for structured input use --format json",
	'J': "a consumer option; for structured input use --format json",
	's': "no serdes; send bytes (use --format json with value_b64 for binary)",
	'r': "no schema registry; encode records before sending",
	'F': "no config file; pass each property with -X prop=value",
	'd': "no librdkafka debug contexts; the summary lists each failure's reason",
	'E': "kpush always keeps going past a failed record (see --keep-going for dead brokers)",
	'u': "output is never buffered beyond one record with -T",
	'v': "no verbosity levels; -q silences progress and the success summary",
	'm': "use -X message.timeout.ms (the first metadata wait is half of it, at most 10s)",
	'V': "use 'kpush version'",
}

const kcatHelp = `kcat flags kpush does not support, and what to use instead:
  -C, -G, -Q   consume / query modes: kpush only produces; use kcat
  -o -e -f -J  consumer options: not applicable
  -s -r        serdes, schema registry: encode records before sending
  -F FILE      config file: pass each property with -X prop=value
  -d -v        debug, verbosity: the summary lists each failure's reason
  -E           always on: a failed record never stops the run
  -m SECONDS   use -X message.timeout.ms
  -u           not needed: -T output is written per record
  -V           use 'kpush version'
  -X list, -X dump, -X transactional.id: not supported (no transactions)
  FILE without -l: kcat sends a whole file as one record; kpush always
               splits files into records (-l is accepted and implied)
`

func parseProduceFlags(args []string, stderr io.Writer) (*produceConfig, error) {
	cfg := &produceConfig{props: defaultProps()}
	opts := &optionSet{cmd: "produce", unsupported: kcatUnsupported}
	var brokers, partition, keyDelim, recDelim, format, count, resume string
	var fixedKey *string
	partition = "-1"
	format = "line"
	opts.str('b', "brokers", "BROKERS", "comma-separated seed brokers, host:port (required)", &brokers)
	opts.str('t', "topic", "TOPIC", "topic to produce to (required)", &cfg.topic)
	opts.str('p', "partition", "N", "partition for every record (-1: murmur2 of the key, sticky without a key)", &partition)
	opts.str('K', "key-delim", "DELIM", `key delimiter: each record is "key<delim>value" (escapes: \n \r \t \0 \\ \xHH)`, &keyDelim)
	opts.str('D', "delim", "DELIM", "record delimiter (escapes as -K; default newline)", &recDelim)
	opts.fn('k', "key", "KEY", "the same key for every record (-K keys take precedence)", func(v string) error {
		fixedKey = &v
		return nil
	})
	opts.fn('H', "header", "NAME=VALUE", "header added to every record; repeatable", func(s string) error {
		name, value, ok := strings.Cut(s, "=")
		if !ok {
			return fmt.Errorf("%q is not name=value", s)
		}
		cfg.headers = append(cfg.headers, kpush.Header{Key: name, Value: []byte(value)})
		return nil
	})
	opts.fn('z', "compression", "CODEC", "compression codec: none, gzip, snappy, lz4, zstd", func(s string) error {
		if err := cfg.props.set("compression.type", s); err != nil {
			return fmt.Errorf("%q is not none, gzip, snappy, lz4 or zstd", s)
		}
		return nil
	})
	xSet, xErr := xOption(cfg.props.set)
	opts.fn('X', "", "PROP=VALUE", "producer property (see above); repeatable", xSet)
	opts.str(0, "format", "FORMAT", "input format: line (default) or json", &format)
	opts.boolean(0, "skip-bad", "skip malformed json lines (reported with their line numbers) instead of stopping", &cfg.skipBad)
	opts.str(0, "failed-out", "FILE", "write records that were definitely not written to FILE (json lines; safe to replay)", &cfg.failedOut)
	opts.str(0, "unknown-out", "FILE", "write records whose outcome is unknown to FILE (default: FILE of --failed-out with .unknown before its extension)", &cfg.unknownOut)
	opts.str(0, "resume", "FILE:LINE:OFFSET", "start reading at this position, as printed by an interrupted run's summary", &resume)
	opts.boolean(0, "keep-going", "keep reading while no broker is reachable (records fail after message.timeout.ms)", &cfg.keepGoing)
	opts.str('c', "count", "N", "stop after N records", &count)
	opts.boolean('T', "tee", "also write each record handed to the producer to stdout, as read", &cfg.tee)
	opts.boolean('q', "quiet", "no progress line, and no summary when every record was sent", &cfg.quiet)
	opts.boolean('Z', "null-empty", "send an empty value as null (a tombstone)", &cfg.nullEmpty)
	opts.str(0, "metrics-addr", "HOST:PORT", "serve /metrics (Prometheus text format) on HOST:PORT while running", &cfg.metricsAddr)
	var ignored bool
	opts.boolean('P', "", "producer mode (kcat; implied)", &ignored)
	opts.boolean('l', "", "split files into records (kcat; always on)", &ignored)
	files, err := opts.parse(args)
	if errors.Is(err, errHelp) {
		fmt.Fprint(stderr, produceUsage)
		opts.printOptions(stderr)
		fmt.Fprint(stderr, "\n"+kcatHelp)
		return nil, errHelp
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, err
	}
	bad := func(format string, a ...any) (*produceConfig, error) {
		err := opts.errorf(format, a...)
		fmt.Fprintln(stderr, err)
		return nil, err
	}
	if *xErr != nil {
		return bad("%v", *xErr)
	}
	if brokers == "" {
		return bad("-b is required (e.g. -b localhost:9092)")
	}
	for _, b := range strings.Split(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			cfg.brokers = append(cfg.brokers, b)
		}
	}
	if cfg.topic == "" {
		return bad("-t is required (the topic to produce to)")
	}
	p, perr := strconv.ParseInt(partition, 10, 32)
	if perr != nil || p < -1 {
		return bad("-p: %s is not a partition number (0, 1, ...) or -1 for the partitioner", partition)
	}
	cfg.partition = int32(p)
	if keyDelim != "" {
		if cfg.keyDelim, err = unescape(keyDelim); err != nil {
			return bad("-K: %v", err)
		}
	}
	if fixedKey != nil {
		cfg.fixedKey = []byte(*fixedKey)
	}
	cfg.recDelim = []byte{'\n'}
	if recDelim != "" {
		if cfg.recDelim, err = unescape(recDelim); err != nil {
			return bad("-D: %v", err)
		}
	}
	switch format {
	case "line":
	case "json":
		cfg.json = true
	default:
		return bad("--format: %q is not line or json", format)
	}
	if cfg.skipBad && !cfg.json {
		return bad("--skip-bad needs --format json (line input has no malformed records)")
	}
	if count != "" {
		if cfg.count, err = strconv.ParseInt(count, 10, 64); err != nil || cfg.count < 1 {
			return bad("-c: %q is not a record count (1 or more)", count)
		}
	}
	cfg.files = files
	if resume != "" {
		if cfg.resume, err = parsePosition(resume, files); err != nil {
			return bad("--resume: %v", err)
		}
	}
	if cfg.unknownOut == "" && cfg.failedOut != "" {
		cfg.unknownOut = unknownName(cfg.failedOut)
	}
	if err := cfg.props.resolve(); err != nil {
		return bad("%v", err)
	}
	return cfg, nil
}

// unknownName is the default --unknown-out for a --failed-out name:
// failed.jsonl becomes failed.unknown.jsonl.
func unknownName(failedOut string) string {
	ext := filepath.Ext(failedOut)
	return strings.TrimSuffix(failedOut, ext) + ".unknown" + ext
}

// errStopped is the cause of the send context once the run stops reading.
var errStopped = errors.New("run stopped")

// runProduce is "kpush produce".
func runProduce(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
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
	if cfg.metricsAddr != "" {
		cfg.metrics = newCLIMetrics(false)
		stop, _, err := serveMetrics(cfg.metricsAddr, cfg.metrics)
		if err != nil {
			t.closeFailedOut()
			return err
		}
		defer stop()
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
	sendCtx, stopSending := context.WithCancelCause(ctx)
	defer stopSending(nil)
	s.abort, s.stopSend = make(chan struct{}), stopSending
	term := isTerminal(stderr) && !cfg.quiet
	var report func(string)
	if !term && !cfg.quiet {
		report = func(msg string) { fmt.Fprintln(stderr, "kpush produce:", msg) }
	}
	s.watch = newWatch(t, &s.handed, cfg.props.deliveryTimeout, s.knownBrokers, report)
	var stopProgress func()
	if term {
		stopProgress = startProgress(stderr, ins, s)
	}
	batches := make(chan []*item, 16)
	stop := make(chan struct{})
	var readErr error
	go func() {
		readErr = s.readInputs(ins, cfg.resume, batches, stop)
		close(batches)
	}()
	var runErr error
	var last *item // the last record handed over (or skipped)
	var stopAt *position
	stopBefore := func(it *item) { stopAt = &position{name: it.name, line: it.line, offset: it.offset} }
loop:
	for {
		select {
		case <-ctx.Done():
			runErr = fmt.Errorf("interrupted: %w", ctx.Err())
			break loop
		case <-s.abort:
			runErr = s.abortErr
			break loop
		case batch, ok := <-batches:
			if !ok {
				runErr = readErr // written before batches was closed
				break loop
			}
			for _, it := range batch {
				if it.bad != nil {
					if !cfg.skipBad {
						stopBefore(it)
						runErr = fmt.Errorf("%s: %v (stopped; --skip-bad skips such lines)", it.where(), it.bad)
						break loop
					}
					t.skip(it)
					last = it
					continue
				}
				if cfg.count > 0 && s.handed.Load() >= cfg.count {
					stopBefore(it)
					break loop
				}
				s.send(sendCtx, it)
				if it.unsent {
					stopBefore(it)
					if runErr = s.abortErr; runErr == nil {
						runErr = fmt.Errorf("interrupted: %w", ctx.Err())
					}
					break loop
				}
				last = it
				if cfg.tee {
					stdout.Write(append(it.raw, cfg.recDelim...))
				}
			}
		}
	}
	stopSending(errStopped)
	close(stop)
	if stopAt == nil && runErr != nil {
		// Stopped between batches: resume after the last record handed
		// over. (-c stops before a record, with stopBefore; ending the
		// loop at the end of the input leaves nothing to resume.)
		switch {
		case last != nil:
			stopAt = &position{name: last.name, line: last.line + 1, offset: last.end}
		case len(ins) > 0 && cfg.resume != nil:
			stopAt = cfg.resume
		case len(ins) > 0:
			stopAt = &position{name: ins[0].name, line: 1}
		}
		if errors.Is(runErr, readErr) && readErr != nil {
			stopAt = nil // a read error: the position is not known
		}
	}
	s.close(ctx)
	s.watch.stop()
	if stopProgress != nil {
		stopProgress()
	}
	elapsed := time.Since(start)
	outErr := t.closeFailedOut()
	sent, failed, _ := t.counts()
	if !cfg.quiet || failed > 0 || runErr != nil || outErr != nil {
		t.writeSummary(stderr, elapsed)
		if stopAt != nil {
			fmt.Fprintf(stderr, "reading stopped at %s line %d, byte %d; to send the rest: kpush produce ... --resume %s\n",
				stopAt.name, stopAt.line, stopAt.offset, stopAt)
		}
	}
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
