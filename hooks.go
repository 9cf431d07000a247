package kpush

// Hooks: optional interfaces a user value may implement to observe the
// producer (metrics, tracing, logging). Modelled on franz-go's kgo.Hook
// family.
//
// Goroutines and ownership: hooks hold no state of kpush's. New sorts the
// hooks into one slice per kind (hookSet, hooks_engine.go); never written
// after New, so every goroutine reads them without a lock. Each hook runs
// on the goroutine named in its interface's doc, never under a kpush lock
// except a broker's send slot (Sink.own) for the request hooks run by the
// goroutine writing that broker's request.

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kpush/kpush/internal/wire"
)

// Hook is a value passed to WithHooks. The type itself means nothing:
// kpush checks once, in New, which of the Hook… interfaces below each
// hook implements, and calls it for those events only. A hook may
// implement any number of them.
//
// Hooks are called concurrently from several goroutines and must be safe
// for concurrent use. They run outside every kpush lock (a request hook
// holds only its broker's send slot, as the sender loop would), on the
// goroutine each interface names, so a hook that blocks delays that
// goroutine's work — a record's Send, a broker's sender loop, the reading of a
// broker's responses — and nothing is dropped or reordered because of it;
// keep hooks fast, and hand slow work to a goroutine of your own. kpush
// recovers no panic: a hook that panics on one of kpush's goroutines
// crashes the program, as a panicking callback does; one that panics on
// the caller's goroutine (OnRecordSend, OnRecordBuffered, and OnRecordDone
// of a Send or of a record that failed before it was buffered) panics out
// of that Send, SendAsync or SendCancelable call, with nothing of the
// record kept and no further hook called for it (docs/observability.md).
// Hooks must not call Flush or Close. A hook may
// call Send or SendAsync, but one running on the metadata goroutine
// (HookEpochBump, and the connection and auth hooks of metadata
// connections) must not send to a topic whose metadata kpush has not
// loaded yet: that send would wait for the metadata goroutine itself
// (until its delivery timeout).
//
// Event structs are passed by value; kpush may add fields to them and may
// add new Hook… interfaces, but does not change existing ones. With no
// hooks installed, an event costs one length check of an empty slice.
type Hook any

// Broker identifies a broker in a hook event.
type Broker struct {
	// NodeID is the broker's node id, or -1 for a metadata connection
	// (kpush dials those by address, the seed brokers first).
	NodeID int32
	// Addr is the host:port kpush dials.
	Addr string
}

// HookRecordSend is called at the start of every Send and SendAsync with
// a non-nil record, on the caller's goroutine, before kpush reads the
// record. r is kpush's own shallow copy of the caller's record (made only
// when record hooks are installed, so the caller's record never escapes
// to the heap without them); the hook may modify r.Headers (for example
// to inject a W3C trace context from ctx: append, or replace the slice),
// and kpush then validates and sends the modified record. The caller's
// Record and its Headers slice are not changed. The hook must not change
// anything else in r, nor the keys and values it shares with the
// caller's record.
//
// The copy is kept in memory kpush reuses (the pooled state of a Send,
// the slab entry of a SendAsync), so that record hooks allocate nothing
// per record: once the record's OnRecordDone hooks have returned, kpush
// clears it and hands the same *Record to a later send. Hooks must not
// retain r (or RecordBufferedEvent.Record, RecordDoneEvent.Record) past
// the record's OnRecordDone; copy what they need. Every OnRecordSend is
// followed by exactly one OnRecordDone (and at most one OnRecordBuffered
// before it) carrying the same *Record, and the pointer is not given to
// another send in between, so a tracer can pair them by pointer as long
// as it forgets the pointer in OnRecordDone. The one exception is a panic
// on the caller's goroutine (a record hook, a custom partitioner): that
// record gets no further hook call, and its *Record may come back for a
// later send without an OnRecordDone.
type HookRecordSend interface {
	// OnRecordSend receives the ctx given to Send or SendAsync and the
	// record.
	OnRecordSend(ctx context.Context, r *Record)
}

// RecordBufferedEvent describes a record that got its partition and its
// buffer space and is about to join its partition's queue.
type RecordBufferedEvent struct {
	Record    *Record // the pointer OnRecordSend received
	Topic     string  // the record's topic (the default topic if r.Topic was empty)
	Partition int32
	// Bytes is the record's encoded size, as counted against
	// WithMaxBufferedBytes.
	Bytes int
}

// HookRecordBuffered is called once per record accepted into the buffer,
// on the caller's goroutine (inside Send or SendAsync), after
// OnRecordSend and before the record can be sent, so it always comes
// before the record's OnRecordDone. Records that fail before (invalid,
// buffer full, closed, unknown topic) are not buffered and get only
// OnRecordDone.
type HookRecordBuffered interface {
	// OnRecordBuffered receives the buffered record.
	OnRecordBuffered(ev RecordBufferedEvent)
}

// Outcome is a record's outcome category, as in errors.Is with
// ErrNotWritten and ErrOutcomeUnknown.
type Outcome uint8

// The outcome categories. Their String values are bounded label values
// for metrics.
const (
	// OutcomeAcked: the broker acknowledged the record (err is nil).
	OutcomeAcked Outcome = iota
	// OutcomeNotWritten: the error matches ErrNotWritten.
	OutcomeNotWritten
	// OutcomeUnknown: the error matches ErrOutcomeUnknown.
	OutcomeUnknown
)

// String returns "acked", "not_written" or "unknown".
func (o Outcome) String() string {
	switch o {
	case OutcomeAcked:
		return "acked"
	case OutcomeNotWritten:
		return "not_written"
	}
	return "unknown"
}

// OutcomeOf returns the outcome category of an error returned by Send or
// given to a SendAsync callback (nil is OutcomeAcked).
func OutcomeOf(err error) Outcome {
	switch {
	case err == nil:
		return OutcomeAcked
	case errors.Is(err, ErrOutcomeUnknown):
		return OutcomeUnknown
	}
	return OutcomeNotWritten
}

// RecordDoneEvent describes a record's outcome, as Send returns it or
// SendAsync's callback receives it.
type RecordDoneEvent struct {
	// Record is the same pointer OnRecordSend received, so a tracer can
	// pair the two events (a span started in OnRecordSend ends here).
	Record *Record
	// Topic is the record's topic; empty when it had none (ErrNoTopic).
	Topic string
	// Partition is -1 when the record failed before one was chosen.
	Partition int32
	// Bytes is the record's encoded size when it was buffered (it had an
	// OnRecordBuffered), else 0.
	Bytes int
	// Result is what Send returns; its Offset is meaningful only when Err
	// is nil.
	Result Result
	// Err is nil when the broker acknowledged the record, else the
	// *ProduceError Send returns (use Outcome or OutcomeOf for its category,
	// CauseOf for a bounded name of its cause).
	Err error
	// Elapsed is the time from the start of Send or SendAsync to the
	// outcome.
	Elapsed time.Duration
	// Answered reports that a broker's answer to a request carrying the
	// record ended it (with AcksNone: the request's write): acknowledged,
	// or failed by the broker. Only then is Stages set; it is false for a
	// record that failed before it was sent, expired in flight, or whose
	// Send gave up (ctx, SendHandle.Cancel) while it was in flight.
	Answered bool
	// Stages splits Elapsed into the record's own stages (their sum is
	// Elapsed) when Answered.
	Stages RecordStages
}

// RecordStages are the stages of one record's path, measured on that
// record (RecordDoneEvent.Stages). They follow one another and add up to
// the record's Elapsed.
type RecordStages struct {
	// Buffer is from the start of Send or SendAsync to the record joining
	// its partition's queue (OnRecordBuffered): the first metadata of a
	// new topic, the partitioner, waiting for buffer space. When nothing
	// waited and the partitioner is a built-in one, its end is the clock
	// reading kpush takes anyway as it starts checking the record
	// (validation and the partition's pick, well under a microsecond,
	// then count as Queue).
	Buffer time.Duration
	// Queue is from there to the write of the request that carried the
	// record (the last one, when its batch was sent again): linger,
	// waiting for an in-flight slot, encoding, and any earlier attempts
	// with their backoff. The write time is taken just before the request
	// goes to its connection, so a wait there (another request being
	// written, a SASL renewal) counts as InFlight.
	Queue time.Duration
	// InFlight is from that write to the broker's answer (with AcksNone,
	// to the end of the write).
	InFlight time.Duration
	// Deliver is from the answer to the outcome's delivery: applying the
	// response, then waking Send, or (SendAsync) waiting in the
	// partition's callback queue behind earlier callbacks.
	Deliver time.Duration
}

// Outcome returns the event's outcome category.
func (ev *RecordDoneEvent) Outcome() Outcome { return OutcomeOf(ev.Err) }

// HookRecordDone is called exactly once per record passed to Send or
// SendAsync (non-nil), when its outcome is delivered: for Send on the
// caller's goroutine just before Send returns; for SendAsync on the
// goroutine that runs the record's callback, just before the callback
// (on the caller's goroutine, before SendAsync returns, for a record that
// fails before it is buffered). A blocking OnRecordDone for a SendAsync
// record delays the callbacks sharing its goroutine, as a slow callback
// does. After it returns, kpush no longer reads ev.Record, and reuses it
// for another record (see HookRecordSend): do not keep it.
type HookRecordDone interface {
	// OnRecordDone receives the record's outcome.
	OnRecordDone(ev RecordDoneEvent)
}

// RequestWrittenEvent describes a ProduceRequest written to a broker (or
// that kpush failed to write).
type RequestWrittenEvent struct {
	Broker Broker
	// Bytes is the size of the request's record batches (as encoded and
	// compressed; the request's own framing is not counted).
	Bytes   int
	Batches int // record batches (one per partition) in the request
	Records int // records in those batches
	// Err is nil when the request was written; otherwise it was not sent
	// and its batches will be retried.
	Err error
}

// HookRequestWritten is called after each ProduceRequest is written to a
// broker's connection (or failed to be), on the goroutine that wrote it:
// that broker's sender loop, or, when the broker had nothing in flight,
// the goroutine of the Send whose record made the request (before that
// Send waits for its outcome). A blocking hook stops new requests to that
// broker. The
// response may be read, and OnRequestAnswered called, before
// OnRequestWritten returns.
type HookRequestWritten interface {
	// OnRequestWritten receives the written request.
	OnRequestWritten(ev RequestWrittenEvent)
}

// RequestAnsweredEvent describes the end of a ProduceRequest: the broker
// answered, or the request failed as a whole.
type RequestAnsweredEvent struct {
	Broker  Broker
	Bytes   int // as in RequestWrittenEvent
	Batches int
	Records int
	// Latency is the time from writing the request to its answer (or
	// failure).
	Latency time.Duration
	// Err is nil when the broker answered (each partition's own error is
	// reported through HookRetry and HookRecordDone); otherwise the
	// request failed as a whole (connection cut, request timeout) and its
	// batches will be retried.
	Err error
}

// HookRequestAnswered is called once per ProduceRequest written (not for
// one OnRequestWritten reported as not written) after its answer or
// failure, before its records' outcomes are delivered, on the goroutine
// reading that broker's connection — its reader, or the goroutine of a
// Send whose ctx cannot be canceled and that wrote the request alone on
// the connection, which reads its own response (holding no kpush lock);
// a blocking hook stops the processing of that broker's responses. With
// AcksNone no answer comes:
// it is called on the sender loop once the request is written.
type HookRequestAnswered interface {
	// OnRequestAnswered receives the answered request.
	OnRequestAnswered(ev RequestAnsweredEvent)
}

// ThrottleEvent describes a broker asking kpush to wait before its next
// request (KIP-219 quotas).
type ThrottleEvent struct {
	Broker   Broker
	Duration time.Duration // how long kpush waits before writing to that broker again
}

// HookThrottle is called when a produce response asks for throttling, on
// the goroutine reading that broker's connection, before
// OnRequestAnswered of the same response.
type HookThrottle interface {
	// OnThrottle receives the throttle.
	OnThrottle(ev ThrottleEvent)
}

// ConnEvent describes a broker connection opening, closing or failing to
// open. Both produce connections (one per broker) and metadata
// connections are reported.
type ConnEvent struct {
	Broker Broker
	// Err is why the connection closed or could not be opened; nil for
	// an opened connection. For a close kpush chose (Close, the idle
	// timeout of WithConnMaxIdle) it says so too.
	Err error
}

// HookConnOpened is called after a connection to a broker is opened and
// ready (API versions negotiated, SASL done), on the goroutine that
// dialed: a broker's sender loop, or the metadata goroutine.
type HookConnOpened interface {
	// OnConnOpened receives the opened connection.
	OnConnOpened(ev ConnEvent)
}

// HookConnClosed is called once for every connection that OnConnOpened
// reported, after it closed for any reason, on that connection's reader
// goroutine as it exits (after the outcomes of the requests that were in
// flight on it are handled); a goroutine closing the connection waits
// for it.
type HookConnClosed interface {
	// OnConnClosed receives the closed connection and the reason.
	OnConnClosed(ev ConnEvent)
}

// HookConnFailed is called when kpush could not open a connection to a
// broker (dial, TLS, API versions or SASL failed), on the goroutine that
// dialed. ev.Err matches ErrAuthentication when the broker refused the
// credentials or certificate.
type HookConnFailed interface {
	// OnConnFailed receives the failed attempt.
	OnConnFailed(ev ConnEvent)
}

// EpochBumpEvent describes a new producer epoch (KIP-360): the broker
// lost or rejected the producer's state, so kpush restarted the sequence
// numbers under a new epoch (or, with brokers before 2.5 and some
// others, a new producer id).
type EpochBumpEvent struct {
	ProducerID int64
	OldEpoch   int16 // the epoch before the bump
	Epoch      int16 // the new epoch
	// OldProducerID is the producer id before the bump; it differs from
	// ProducerID when the broker gave a new id instead of a new epoch.
	OldProducerID int64
	// Cause is the broker error that made kpush ask for the bump when
	// known (for example kerr.OutOfOrderSequenceNumber or
	// kerr.UnknownProducerID), else nil.
	Cause error
}

// HookEpochBump is called after each successful epoch bump, on the
// metadata goroutine.
type HookEpochBump interface {
	// OnEpochBump receives the bump.
	OnEpochBump(ev EpochBumpEvent)
}

// AuthEvent describes a SASL authentication, or a failure to
// authenticate or secure (TLS) a connection.
type AuthEvent struct {
	Broker Broker
	// Mechanism is the SASL mechanism's name ("PLAIN", "SCRAM-SHA-512",
	// ...), or "" for a TLS failure without SASL.
	Mechanism string
	// Reauth tells a re-authentication of a live connection (KIP-368)
	// from the first authentication of a new one.
	Reauth bool
	// Err is nil on success; otherwise it matches ErrAuthentication and
	// carries the broker's message, never credentials.
	Err error
}

// HookAuth is called after every SASL authentication and every
// authentication or TLS failure, on the goroutine that dialed (or that
// re-authenticated before its next request), after kpush released the
// connection.
type HookAuth interface {
	// OnAuth receives the authentication's result.
	OnAuth(ev AuthEvent)
}

// RetryEvent describes a batch kpush will send again.
type RetryEvent struct {
	Topic     string
	Partition int32
	Records   int // records in the batch
	// Cause is why: the broker's partition error (a *kerr.Error) or the
	// request's failure (connection cut, timeout).
	Cause error
}

// HookRetry is called once per batch that comes back to be sent again
// (a retriable broker error, a request that failed as a whole, a batch
// split because the broker found it too large, the rest of a batch whose
// named records the broker rejected), on the goroutine handling the
// response (the connection's reader, or the goroutine that tried to write
// a request that could not be written: the sender loop, or a Send's as for
// HookRequestWritten), after OnRequestAnswered for the same
// request and after the partition's lock is released.
type HookRetry interface {
	// OnRetry receives the retried batch.
	OnRetry(ev RetryEvent)
}

// WithHooks installs hooks (see Hook): each value is called for the Hook…
// interfaces it implements. A value implementing none of them makes New
// fail with a *ConfigError. Calling WithHooks more than once adds to the
// hooks; they are called in the order given. Default: none. No Java
// producer property matches; the closest are interceptor.classes and
// metric.reporters.
func WithHooks(hooks ...Hook) Option {
	return optionFunc(func(c *config) { c.hooks = append(c.hooks, hooks...) })
}

// causes are CauseOf's names for kpush's own causes, checked in order.
var causes = []struct {
	err  error
	name string
}{
	{ErrDeliveryTimeout, "delivery_timeout"},
	{ErrSequenceReset, "sequence_reset"},
	{ErrBufferFull, "buffer_full"},
	{ErrClosed, "closed"},
	{ErrRecordTooLarge, "record_too_large"},
	{ErrNilRecord, "nil_record"},
	{ErrNoTopic, "no_topic"},
	{ErrInvalidTopic, "invalid_topic"},
	{ErrInvalidHeader, "invalid_header"},
	{ErrInvalidTimestamp, "invalid_timestamp"},
	{ErrInvalidPartition, "invalid_partition"},
	{ErrUnknownTopic, "unknown_topic"},
	{ErrNoBroker, "no_broker"},
	{ErrAuthentication, "authentication"},
	{context.Canceled, "canceled"},
	{context.DeadlineExceeded, "deadline_exceeded"},
	{wire.ErrRequestTimeout, "request_timeout"},
	{wire.ErrMaybeDelivered, "connection"},
	{wire.ErrConnClosed, "connection"},
}

// CauseOf returns a short, bounded name for an error's cause, for metric
// labels: "" for nil; "delivery_timeout", "buffer_full", "closed",
// "record_too_large", "canceled", "deadline_exceeded", "authentication",
// "request_timeout", "connection" and the like for kpush's causes (one per
// Err… sentinel of this package); a broker error's Kafka name in lower
// case ("not_enough_replicas", "message_too_large", ...; a fixed set
// defined by the protocol); "other" for anything else. A kpush cause is
// preferred to a broker error found in the same chain. It allocates
// nothing once a broker error's name was seen (metrics call it per
// record).
func CauseOf(err error) string {
	if err == nil {
		return ""
	}
	for _, c := range causes {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	if ke := kafkaError(err); ke != nil {
		return kafkaCauseName(ke.Message)
	}
	return "other"
}

// kafkaError finds a *kerr.Error in err's chain as errors.As would,
// without errors.As's target escaping to the heap (an allocation per
// call).
func kafkaError(err error) *kerr.Error {
	for err != nil {
		switch x := err.(type) {
		case *kerr.Error:
			return x
		case interface{ Unwrap() []error }:
			for _, e := range x.Unwrap() {
				if ke := kafkaError(e); ke != nil {
					return ke
				}
			}
			return nil
		case interface{ As(any) bool }:
			// A type with its own As may stand for a *kerr.Error: ask it
			// as errors.As does (this allocates; kpush's errors have none).
			var ke *kerr.Error
			if errors.As(err, &ke) {
				return ke
			}
			return nil
		case interface{ Unwrap() error }:
			err = x.Unwrap()
		default:
			return nil
		}
	}
	return nil
}

// kafkaCauseNames caches kafkaCauseName's lower-case names, copy-on-write
// (replaced under kafkaCauseMu); at most maxKafkaCauseNames entries, past
// which a name is lowered per call instead.
var (
	kafkaCauseNames atomic.Pointer[map[string]string]
	kafkaCauseMu    sync.Mutex
)

// maxKafkaCauseNames bounds kafkaCauseNames: Kafka defines about 130
// error codes.
const maxKafkaCauseNames = 512

// kafkaCauseName returns msg (a Kafka error code's name) in lower case.
func kafkaCauseName(msg string) string {
	if m := kafkaCauseNames.Load(); m != nil {
		if name, ok := (*m)[msg]; ok {
			return name
		}
	}
	name := strings.ToLower(msg)
	kafkaCauseMu.Lock()
	defer kafkaCauseMu.Unlock()
	var old map[string]string
	if m := kafkaCauseNames.Load(); m != nil {
		old = *m
	}
	if len(old) >= maxKafkaCauseNames {
		return name
	}
	next := make(map[string]string, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[msg] = name
	kafkaCauseNames.Store(&next)
	return name
}
