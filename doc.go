// Package kpush is a Kafka producer built for many goroutines that each
// send one record and wait for the broker's acknowledgement.
//
// # Getting started
//
// Create one Producer per process with New and share it. Send blocks until
// the record is acknowledged; SendAsync returns at once and calls a
// callback. Flush waits for every record sent before it; Close flushes and stops.
//
//	p, err := kpush.New(kpush.WithBrokers("localhost:9092"))
//	if err != nil { ... }
//	defer p.Close(context.Background())
//	res, err := p.Send(ctx, &kpush.Record{Topic: "events", Value: []byte("hello")})
//
// For tests and local development, package kafkatest starts an in-process
// fake cluster, and `go run ./cmd/kpush dev` runs one other clients can use.
//
// # Delivery guarantees
//
// By default kpush waits for all in-sync replicas (AcksAll) and writes
// idempotently: retries carry the same sequence numbers, so the broker drops
// duplicates, and up to five requests per broker are in flight with order
// kept per partition. Failed batches are retried, in order, until the
// delivery timeout (WithDeliveryTimeout, default 2 minutes) passes. Memory
// is bounded (WithMaxBufferedBytes, WithMaxBufferedRecords): when full,
// senders wait or fail fast. Every record gets exactly one outcome; nothing
// is dropped silently, not even by Close.
//
// # Batching
//
// A sender goroutine per broker drains every ready partition into one
// request whenever an in-flight slot is free. At low load a record goes out
// at once (no linger); under load, records accumulate while earlier
// requests are in flight, so batches grow by themselves.
//
// # Errors
//
// Every failed record's error is a *ProduceError carrying topic, partition
// and cause, and it matches exactly one of two categories:
//
//   - ErrNotWritten: the record was definitely not written (invalid record,
//     buffer full in fail-fast mode, ctx done before sending, broker rejected
//     it). Retrying cannot duplicate it.
//   - ErrOutcomeUnknown: the record may have been written (timeout,
//     connection cut, ctx done while in flight). Retrying may duplicate it.
//
// The cause is in the chain: errors.Is(err, kpush.ErrBufferFull),
// errors.Is(err, context.DeadlineExceeded), errors.Is(err,
// kpush.ErrMessageTooLarge). New reports invalid options as *ConfigError
// (errors.Is(err, ErrInvalidConfig)).
//
// # Security
//
// WithTLS encrypts connections (TLSConfigFromFiles builds a configuration
// from PEM files) and WithSASL authenticates them with SASLPlain,
// SASLScramSHA256, SASLScramSHA512 or SASLOAuthBearer (a token function,
// for cloud IAM). Sessions with a lifetime are renewed on the same
// connection before they expire (KIP-368). A connection that cannot be
// authenticated or secured fails the records waiting for it at once with
// ErrAuthentication (not written), never after the delivery timeout; the
// broker's message is kept, credentials never appear in errors, logs or
// Stats. See docs/security.md.
//
// # Observability
//
// WithHooks installs hooks (see Hook) that observe records, requests,
// connections, throttles, retries, epoch bumps and authentication; with
// none installed they cost nothing. The kprom module turns them into
// Prometheus metrics. See docs/observability.md.
//
// # Concurrency
//
// All Producer methods are safe for concurrent use. The send path takes one
// small lock per partition and no producer-wide lock; a waiting Send is
// woken once, by the goroutine that reads its broker's response. Callbacks
// of SendAsync never run under a kpush lock; see SendAsync for their order.
package kpush
