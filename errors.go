package kpush

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kpush/kpush/internal/wire"
)

// Outcome categories. Every error returned for a record is a *ProduceError
// that matches exactly one of them with errors.Is.
var (
	// ErrNotWritten matches errors for records that were definitely not
	// written: invalid input, buffer full in fail-fast mode, ctx done before
	// the record was sent, the broker rejected it, or the producer closed
	// before sending it. Retrying such a record cannot create a duplicate.
	ErrNotWritten = errors.New("kpush: record not written")
	// ErrOutcomeUnknown matches errors for records that may or may not
	// have been written: the request reached (or may have reached) the
	// broker, but no acknowledgement arrived (timeout, connection cut, ctx
	// done while in flight). Retrying such a record may create a duplicate.
	ErrOutcomeUnknown = errors.New("kpush: record outcome unknown")
)

// Causes for Send and SendAsync; found with errors.Is on the returned error.
var (
	// ErrNilRecord: Send or SendAsync was given a nil record.
	ErrNilRecord = errors.New("kpush: nil record")
	// ErrNoTopic: the record has no topic and the producer no default topic.
	ErrNoTopic = errors.New("kpush: record has no topic and no default topic is set")
	// ErrInvalidTopic: the topic name is not one Kafka accepts (longer
	// than 249 bytes, "." or "..", or a character other than ASCII
	// letters, digits, '.', '_' and '-'). An empty topic is ErrNoTopic.
	ErrInvalidTopic = errors.New("kpush: invalid topic name")
	// ErrInvalidHeader: a header key is not valid UTF-8 (Kafka header
	// keys are strings; consumers would decode it lossily).
	ErrInvalidHeader = errors.New("kpush: invalid header")
	// ErrInvalidTimestamp: the record's timestamp is before the Unix epoch
	// (Kafka timestamps are non-negative milliseconds; -1 means none).
	ErrInvalidTimestamp = errors.New("kpush: invalid timestamp")
	// ErrRecordTooLarge: the encoded record does not fit in a batch of
	// WithMaxBatchBytes, or is larger than the whole buffer
	// (WithMaxBufferedBytes). The cause is a *RecordTooLargeError, which
	// has the record's size and the limit.
	ErrRecordTooLarge = errors.New("kpush: record too large")
	// ErrUnknownTopic: the cluster does not have the topic (and does not
	// create it automatically).
	ErrUnknownTopic = errors.New("kpush: unknown topic")
	// ErrInvalidPartition: the record's own partition (UsePartition, or
	// ManualPartitioner), or the one a custom Partitioner returned, is
	// negative or not less than the topic's partition count.
	ErrInvalidPartition = errors.New("kpush: invalid partition")
	// ErrBufferFull: the buffer is full and the producer fails fast
	// (WithFailFastWhenFull).
	ErrBufferFull = errors.New("kpush: buffer full")
	// ErrClosed: the producer is closed (or closing) and takes no more
	// records; records still buffered when Close gives up fail with it.
	ErrClosed = errors.New("kpush: producer closed")
	// ErrDeliveryTimeout: the record could not be acknowledged within the
	// delivery timeout (WithDeliveryTimeout), retries included.
	ErrDeliveryTimeout = errors.New("kpush: delivery timeout expired")
	// ErrSequenceReset: the producer had to start a new epoch (KIP-360)
	// while this record's earlier attempt had an unknown outcome; resending
	// could have duplicated it, so it fails with an unknown outcome.
	ErrSequenceReset = errors.New("kpush: producer epoch reset while the record's outcome was unknown")
	// ErrNoBroker: no broker could be reached for metadata.
	ErrNoBroker = errors.New("kpush: no broker reachable")
	// ErrAuthentication: a broker connection could not be authenticated or
	// secured — SASL failed (wrong user or password, unsupported mechanism,
	// rejected or expired token, the token provider's error), the broker's
	// TLS certificate could not be verified (or the broker refused ours), or
	// the broker expects TLS and WithTLS is not set. Records waiting for
	// that broker fail at once, not after the delivery timeout, and were
	// not written (ErrNotWritten) — except records of a batch already sent
	// on a connection that then died, waiting to be sent again: those match
	// ErrOutcomeUnknown. Retrying helps only once credentials or
	// configuration change. The error carries the broker's message, never
	// credentials. Stats counts these failures.
	ErrAuthentication = errors.New("kpush: authentication failed")
)

// Broker errors that users commonly check, re-exported from franz-go's kerr
// package (errors.Is matches them in a *ProduceError's chain). Any other
// broker error code is also in the chain as a *kerr.Error.
var (
	ErrMessageTooLarge          = kerr.MessageTooLarge
	ErrInvalidRecord            = kerr.InvalidRecord
	ErrTopicAuthorizationFailed = kerr.TopicAuthorizationFailed
	ErrNotEnoughReplicas        = kerr.NotEnoughReplicas
)

// RecordTooLargeError is the cause of an ErrRecordTooLarge failure: it
// says how large the record is and which limit it exceeds.
// errors.Is(err, ErrRecordTooLarge) matches it.
type RecordTooLargeError struct {
	Size   int64  // the record's encoded size in bytes
	Limit  int64  // the largest size the limit allows, in bytes
	Option string // the option that sets the limit: "WithMaxBatchBytes" or "WithMaxBufferedBytes"
}

// Error implements error.
func (e *RecordTooLargeError) Error() string {
	return fmt.Sprintf("kpush: record too large: %d bytes encoded, %s allows at most %d", e.Size, e.Option, e.Limit)
}

// Is makes errors.Is(err, ErrRecordTooLarge) true.
func (e *RecordTooLargeError) Is(target error) bool { return target == ErrRecordTooLarge }

// ErrInvalidConfig matches every error New returns for an invalid option.
var ErrInvalidConfig = errors.New("kpush: invalid configuration")

// ConfigError reports an invalid option passed to New.
type ConfigError struct {
	Option string // the option's name, e.g. "WithMaxInflight"
	Reason string
}

// Error implements error.
func (e *ConfigError) Error() string {
	return "kpush: invalid option " + e.Option + ": " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// ProduceError is the error for one record. Use errors.Is with
// ErrNotWritten or ErrOutcomeUnknown to learn whether the record may have
// been written, and with the causes above (or a context error, or a kerr
// broker error) to learn why.
type ProduceError struct {
	Topic     string
	Partition int32 // -1 when no partition was chosen yet
	// Unknown is true when the record may have been written.
	Unknown bool
	// Err is the cause.
	Err error
}

// Error implements error.
func (e *ProduceError) Error() string {
	what := "not written"
	if e.Unknown {
		what = "outcome unknown"
	}
	where := e.Topic
	if e.Partition >= 0 {
		where += "[" + strconv.Itoa(int(e.Partition)) + "]"
	}
	if where == "" {
		return fmt.Sprintf("kpush: produce: %v (%s)", trimPrefix(e.Err), what)
	}
	return fmt.Sprintf("kpush: produce to %s: %v (%s)", where, trimPrefix(e.Err), what)
}

// Unwrap returns the cause.
func (e *ProduceError) Unwrap() error { return e.Err }

// Is matches the outcome category, and ErrAuthentication when the cause is
// a failure to authenticate or secure a connection.
func (e *ProduceError) Is(target error) bool {
	switch target {
	case ErrOutcomeUnknown:
		return e.Unknown
	case ErrNotWritten:
		return !e.Unknown
	case ErrAuthentication:
		// The connection code wraps its own sentinel (internal/wire cannot
		// import this package); this is where it becomes the public one.
		return errors.Is(e.Err, wire.ErrAuth)
	}
	return false
}

// trimPrefix avoids "kpush: produce to t: kpush: buffer full".
func trimPrefix(err error) string {
	s := err.Error()
	if len(s) > 7 && s[:7] == "kpush: " {
		return s[7:]
	}
	return s
}

func notWritten(topic string, partition int32, cause error) error {
	return &ProduceError{Topic: topic, Partition: partition, Err: cause}
}

// publicErr makes a connection error handed to users outside a
// ProduceError (hook events) match the public sentinels: internal/wire
// wraps its own ErrAuth, which becomes ErrAuthentication here.
func publicErr(err error) error {
	if err == nil || !errors.Is(err, wire.ErrAuth) {
		return err
	}
	return authError{err}
}

// authError is a connection error that matches ErrAuthentication.
type authError struct{ err error }

func (e authError) Error() string        { return e.err.Error() }
func (e authError) Unwrap() error        { return e.err }
func (e authError) Is(target error) bool { return target == ErrAuthentication }
