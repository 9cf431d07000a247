package kpush

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/kpush/kpush/internal/batch"
	"github.com/kpush/kpush/internal/buffer"
)

// Acks is how many replicas must have a record before the broker answers.
type Acks int16

const (
	// AcksAll waits for all in-sync replicas (Java acks=all); the default
	// and required for idempotence.
	AcksAll Acks = -1
	// AcksLeader waits for the partition leader only (acks=1).
	AcksLeader Acks = 1
	// AcksNone does not wait at all (acks=0): the broker sends no answer,
	// Send returns once the request is written, offsets are -1.
	AcksNone Acks = 0
)

// Compression is a batch compression codec.
type Compression int8

// Compression codecs (Java compression.type). The values are the codec ids
// of the Kafka RecordBatch attributes field.
const (
	NoCompression Compression = 0
	Gzip          Compression = 1
	Snappy        Compression = 2
	LZ4           Compression = 3
	Zstd          Compression = 4
)

// String returns the Kafka name of the codec ("none", "gzip", ...).
func (c Compression) String() string { return batch.Codec(c).String() }

// ParseCompression parses a Kafka codec name ("none", "gzip", "snappy",
// "lz4", "zstd").
func ParseCompression(s string) (Compression, error) {
	c, err := batch.ParseCodec(s)
	return Compression(c), err
}

// Option configures a Producer; pass options to New.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	brokers         []string
	clientID        string
	acks            Acks
	idempotent      bool
	idempotentSet   bool
	maxInflight     int
	maxBatchBytes   int
	maxRequestBytes int
	maxRequestSet   bool
	linger          time.Duration
	coalesceBytes   int
	coalesceMaxWait time.Duration // tests only (export_test.go); 0: the engine's 5 ms
	maxBufBytes     int64
	maxBufRecords   int64
	failFast        bool
	deliveryTimeout time.Duration
	requestTimeout  time.Duration
	retryBackoff    time.Duration
	dialTimeout     time.Duration
	connMaxIdle     time.Duration
	compression     Compression
	partitioner     Partitioner
	defaultTopic    string
	logger          *slog.Logger
	metadataMaxAge  time.Duration
	tls             *tls.Config
	sasl            SASLMechanism
	saslSet         bool
	hooks           []Hook // WithHooks; sorted by kind into Producer.hooks by New
}

// defaultConfig holds every default; the README's options table is checked
// against it by TestREADMEDefaults.
func defaultConfig() config {
	return config{
		clientID:        "kpush",
		acks:            AcksAll,
		idempotent:      true,
		maxInflight:     5,
		maxBatchBytes:   1 << 20,
		maxRequestBytes: 32 << 20,
		linger:          0,
		coalesceBytes:   16 << 10,
		maxBufBytes:     64 << 20,
		maxBufRecords:   1 << 15,
		deliveryTimeout: 2 * time.Minute,
		requestTimeout:  30 * time.Second,
		retryBackoff:    100 * time.Millisecond,
		dialTimeout:     10 * time.Second,
		connMaxIdle:     9 * time.Minute,
		compression:     NoCompression,
		partitioner:     StickyPartitioner,
		metadataMaxAge:  5 * time.Minute,
	}
}

// WithBrokers sets the seed brokers, "host:port" each (Java
// bootstrap.servers). Required.
func WithBrokers(addrs ...string) Option {
	return optionFunc(func(c *config) { c.brokers = append(c.brokers, addrs...) })
}

// WithClientID sets the client id sent with every request (Java client.id).
// Default "kpush".
func WithClientID(id string) Option { return optionFunc(func(c *config) { c.clientID = id }) }

// WithAcks sets the acknowledgement level (Java acks). Default AcksAll.
// Acks other than AcksAll turn idempotence off unless WithIdempotence(true)
// is also given, which is then an error.
func WithAcks(a Acks) Option { return optionFunc(func(c *config) { c.acks = a }) }

// WithIdempotence turns idempotent writes on or off (Java
// enable.idempotence). Default on: the broker drops duplicates of retried
// batches, so retries never duplicate and order holds with up to five
// requests in flight. Off: retries may duplicate, and each partition has at
// most one batch in flight so retries still cannot reorder.
func WithIdempotence(on bool) Option {
	return optionFunc(func(c *config) { c.idempotent, c.idempotentSet = on, true })
}

// WithMaxInflight sets how many produce requests may be outstanding per
// broker (Java max.in.flight.requests.per.connection). Default 5; 1 to 5
// with idempotence.
func WithMaxInflight(n int) Option { return optionFunc(func(c *config) { c.maxInflight = n }) }

// WithMaxBatchBytes sets the largest RecordBatch sent for one partition in
// one request, and so the largest record (Java batch.size and
// max.request.size together). Default 1 MiB, which matches the broker's
// default message.max.bytes. Batches only grow this large under load: a
// partition's batch holds whatever accumulated while earlier requests were
// in flight.
func WithMaxBatchBytes(n int) Option { return optionFunc(func(c *config) { c.maxBatchBytes = n }) }

// WithMaxRequestBytes caps the record batches of one ProduceRequest, all
// partitions together, in bytes. Default 32 MiB. A broker closes the
// connection of a request larger than its socket.request.max.bytes (default
// 100 MiB), and every batch in it would end with an unknown outcome; keep
// this below that setting, with room for the request's framing (a few dozen
// bytes per partition). Partitions whose batches do not fit one request go
// in the next; one batch always fits, so it must be at least
// WithMaxBatchBytes (when not given, it is raised to WithMaxBatchBytes if
// that is larger).
//
// The Java property max.request.size (default 1 MiB) plays two roles: it
// caps a request's size, as this option does, and the size of one record,
// which kpush leaves to WithMaxBatchBytes. Java applies it to the
// uncompressed request; kpush counts encoded (possibly compressed) batches
// once encoded and the uncompressed size before.
func WithMaxRequestBytes(n int) Option {
	return optionFunc(func(c *config) { c.maxRequestBytes, c.maxRequestSet = n, true })
}

// WithLinger makes a partition wait up to d for more records before sending
// a batch that is not full (Java linger.ms). Default 0: batching comes from
// requests in flight, so a lone record is sent at once.
func WithLinger(d time.Duration) Option { return optionFunc(func(c *config) { c.linger = d }) }

// WithCoalesceBytes sets when a request may overtake the one in flight
// (default 16 KiB). While a ProduceRequest to a broker is in flight, the
// next request to that broker waits for a response unless its partitions
// hold at least n bytes of records or one of them has a batch to resend;
// records arriving meanwhile join it, so a busy broker gets fewer, larger
// requests. A wait lasts at most 5 ms, so sending never depends on a
// response arriving. With nothing in flight a record is sent at once, as
// before, so a lone sender's latency is unchanged; with AcksNone (no
// responses) there is no waiting. 0 turns waiting off: every ready
// partition is sent as soon as an in-flight slot (WithMaxInflight) is
// free. Negative is an error.
func WithCoalesceBytes(n int) Option { return optionFunc(func(c *config) { c.coalesceBytes = n }) }

// WithMaxBufferedBytes bounds the bytes of records buffered or in flight
// (Java buffer.memory). Default 64 MiB. When full, Send and SendAsync wait
// (ctx-aware) or fail with ErrBufferFull (WithFailFastWhenFull). A single
// record larger than the limit fails at once with ErrRecordTooLarge.
func WithMaxBufferedBytes(n int64) Option { return optionFunc(func(c *config) { c.maxBufBytes = n }) }

// WithMaxBufferedRecords bounds the number of records buffered or in
// flight. Default 32,768 (franz-go's MaxBufferedRecords is 50,000,
// librdkafka's queue.buffering.max.messages 100,000): every buffered record
// holds a few hundred bytes of bookkeeping beyond its own, and a fast
// asynchronous sender keeps the buffer full, so this bounds the live heap
// the GC scans and the records the sink touches cold (see
// docs/internals.md, "Where the time goes"). Sends wait for room above it,
// as for WithMaxBufferedBytes.
func WithMaxBufferedRecords(n int64) Option {
	return optionFunc(func(c *config) { c.maxBufRecords = n })
}

// WithFailFastWhenFull makes Send and SendAsync fail at once with
// ErrBufferFull (not written) when the buffer is full, instead of waiting
// for space (Java max.block.ms=0). Default off (wait).
func WithFailFastWhenFull(on bool) Option { return optionFunc(func(c *config) { c.failFast = on }) }

// WithDeliveryTimeout bounds the time from Send to an outcome, retries
// included (Java delivery.timeout.ms). Default 2 minutes. Must be at least
// the request timeout plus linger. The bound is hard: it covers the wait
// for buffer space and first metadata too, and every outcome arrives by
// the deadline plus a slack of at most 100ms on an unloaded machine
// (timer and scheduling latency). A record still buffered then fails with
// ErrDeliveryTimeout (not written); a record in a request that has not
// been answered yet, or in a batch waiting to be retried, ends as
// ErrOutcomeUnknown with cause ErrDeliveryTimeout, and the late answer is
// ignored.
func WithDeliveryTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.deliveryTimeout = d })
}

// WithRequestTimeout bounds one produce request: the broker's replication
// wait and kpush's wait for the response (Java request.timeout.ms). Default
// 30 seconds. A request that times out has an unknown outcome and is
// retried (idempotence makes that safe).
func WithRequestTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.requestTimeout = d })
}

// WithRetryBackoff sets the first wait before retrying a failed batch; it
// doubles per consecutive failure up to 1s (or d when larger), with ±20%
// jitter (Java retry.backoff.ms / retry.backoff.max.ms, KIP-580). Default
// 100ms. The same schedule paces reconnecting to a broker that refuses
// connections (Java reconnect.backoff.ms / reconnect.backoff.max.ms) and
// the metadata refreshes that errors trigger. Request rates that follow:
// against an unreachable broker that still leads partitions with records
// waiting, at most one dial per backoff step, so about one a second once
// the backoff has grown; a broker that left the cluster is never dialed
// again once its partitions moved. A topic that is deleted, denied or
// has a partition without a leader costs at most one metadata request
// per step (about one a second) while records wait for it, and none once
// they have their outcome. An idle producer sends only the periodic
// metadata request (WithMetadataMaxAge).
func WithRetryBackoff(d time.Duration) Option {
	return optionFunc(func(c *config) { c.retryBackoff = d })
}

// WithDialTimeout bounds connecting to a broker, including the TLS
// handshake and API version negotiation (Java socket.connection.setup.timeout.ms).
// Default 10 seconds.
func WithDialTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.dialTimeout = d })
}

// WithConnMaxIdle closes a broker connection on which nothing was sent or
// received for d, with nothing in flight (Java connections.max.idle.ms).
// Brokers close connections idle for their connections.max.idle.ms
// (10 minutes by default); closing first means a new request never
// races with the broker's close. The next request dials again. Default
// 9 minutes (Java's 540000 ms); 0 never closes idle connections.
func WithConnMaxIdle(d time.Duration) Option {
	return optionFunc(func(c *config) { c.connMaxIdle = d })
}

// WithCompression sets the batch codec (Java compression.type). Default
// NoCompression.
func WithCompression(codec Compression) Option {
	return optionFunc(func(c *config) { c.compression = codec })
}

// WithPartitioner sets how records without UsePartition are spread over
// partitions: a built-in partitioner or a custom one (see Partitioner).
// Default StickyPartitioner (murmur2 for keys, adaptive sticky for keyless
// records). Java partitioner.class; UniformStickyPartitioner is the Java
// default with partitioner.adaptive.partitioning.enable=false. A nil
// Partitioner is an invalid option.
func WithPartitioner(p Partitioner) Option { return optionFunc(func(c *config) { c.partitioner = p }) }

// WithDefaultTopic sets the topic for records whose Topic is empty.
// Default none.
func WithDefaultTopic(topic string) Option {
	return optionFunc(func(c *config) { c.defaultTopic = topic })
}

// WithLogger sets the logger for connection problems and retries. Default:
// no logging. Records' contents and credentials are never logged.
func WithLogger(l *slog.Logger) Option { return optionFunc(func(c *config) { c.logger = l }) }

// WithMetadataMaxAge sets how often metadata is refreshed when nothing
// forces a refresh (Java metadata.max.age.ms). Default 5 minutes: an idle
// producer sends one metadata request per interval and nothing else. A
// topic that no record used for 5 minutes (Java metadata.max.idle.ms) is
// no longer asked about; its next record brings it back.
func WithMetadataMaxAge(d time.Duration) Option {
	return optionFunc(func(c *config) { c.metadataMaxAge = d })
}

// WithTLS encrypts every broker connection with TLS (Java
// security.protocol=SSL, or SASL_SSL together with WithSASL). Default off.
// nil, or a zero tls.Config, verifies brokers against the system's roots;
// set RootCAs for a private CA and Certificates for mutual TLS, or build
// the configuration with TLSConfigFromFiles. ServerName defaults to each
// broker's host name. TLS 1.2 is the minimum: a MinVersion below it is an
// error. A certificate that cannot be verified fails records at once with
// ErrAuthentication, as does a plaintext connection to a TLS listener.
// cfg is copied by New; changing it afterwards has no effect.
func WithTLS(cfg *tls.Config) Option {
	return optionFunc(func(c *config) {
		if cfg == nil {
			c.tls = &tls.Config{}
			return
		}
		c.tls = cfg.Clone() // fixed at New: later changes by the caller do not apply
	})
}

// validate checks the configuration; it returns a *ConfigError naming the
// first bad option.
func (c *config) validate() error {
	bad := func(opt, format string, args ...any) error {
		return &ConfigError{Option: opt, Reason: fmt.Sprintf(format, args...)}
	}
	if c.defaultTopic != "" {
		if err := checkTopicName(c.defaultTopic); err != nil {
			return bad("WithDefaultTopic", "%v", err)
		}
	}
	if len(c.brokers) == 0 {
		return bad("WithBrokers", "no seed brokers")
	}
	for _, b := range c.brokers {
		host, port, err := net.SplitHostPort(b)
		if err != nil || host == "" {
			return bad("WithBrokers", "%q is not host:port", b)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return bad("WithBrokers", "%q has an invalid port", b)
		}
	}
	switch c.acks {
	case AcksAll, AcksLeader, AcksNone:
	default:
		return bad("WithAcks", "%d is not AcksAll, AcksLeader or AcksNone", c.acks)
	}
	if c.acks != AcksAll {
		if c.idempotentSet && c.idempotent {
			return bad("WithIdempotence", "idempotence needs AcksAll (acks is %d)", c.acks)
		}
		c.idempotent = false
	}
	switch {
	case c.maxInflight < 1:
		return bad("WithMaxInflight", "%d is less than 1", c.maxInflight)
	case c.idempotent && c.maxInflight > 5:
		return bad("WithMaxInflight", "%d is more than 5, the most idempotence allows", c.maxInflight)
	case c.maxInflight > 100:
		return bad("WithMaxInflight", "%d is more than 100", c.maxInflight)
	}
	if c.maxBatchBytes < 1024 || c.maxBatchBytes > 1<<30 {
		return bad("WithMaxBatchBytes", "%d is not between 1 KiB and 1 GiB", c.maxBatchBytes)
	}
	if !c.maxRequestSet {
		c.maxRequestBytes = max(c.maxRequestBytes, c.maxBatchBytes)
	}
	if c.maxRequestBytes < c.maxBatchBytes || c.maxRequestBytes > 1<<30 {
		return bad("WithMaxRequestBytes", "%d is not between WithMaxBatchBytes (%d) and 1 GiB", c.maxRequestBytes, c.maxBatchBytes)
	}
	if c.linger < 0 {
		return bad("WithLinger", "%v is negative", c.linger)
	}
	if c.coalesceBytes < 0 {
		return bad("WithCoalesceBytes", "%d is negative", c.coalesceBytes)
	}
	if c.maxBufBytes < 1 || c.maxBufBytes > buffer.MaxBytes {
		return bad("WithMaxBufferedBytes", "%d is not between 1 and %d", c.maxBufBytes, int64(buffer.MaxBytes))
	}
	if c.maxBufRecords < 1 || c.maxBufRecords > buffer.MaxRecords {
		return bad("WithMaxBufferedRecords", "%d is not between 1 and %d", c.maxBufRecords, buffer.MaxRecords)
	}
	if c.requestTimeout <= 0 {
		return bad("WithRequestTimeout", "%v is not positive", c.requestTimeout)
	}
	if c.deliveryTimeout < c.requestTimeout+c.linger {
		return bad("WithDeliveryTimeout", "%v is less than the request timeout plus linger (%v)", c.deliveryTimeout, c.requestTimeout+c.linger)
	}
	if c.retryBackoff <= 0 {
		return bad("WithRetryBackoff", "%v is not positive", c.retryBackoff)
	}
	if c.dialTimeout <= 0 {
		return bad("WithDialTimeout", "%v is not positive", c.dialTimeout)
	}
	if c.connMaxIdle < 0 {
		return bad("WithConnMaxIdle", "%v is negative", c.connMaxIdle)
	}
	if c.metadataMaxAge <= 0 {
		return bad("WithMetadataMaxAge", "%v is not positive", c.metadataMaxAge)
	}
	switch c.compression {
	case NoCompression, Gzip, Snappy, LZ4, Zstd:
	default:
		return bad("WithCompression", "unknown codec %d", c.compression)
	}
	if c.partitioner == nil {
		return bad("WithPartitioner", "nil partitioner")
	}
	if _, i := newHookSet(c.hooks); i >= 0 {
		return bad("WithHooks", "hook %d (%T) implements no Hook interface", i, c.hooks[i])
	}
	return c.validateSecurity()
}
