// Package kotel is OpenTelemetry instrumentation for kpush producers: the
// messaging semantic conventions' metrics, one PRODUCER span per record,
// and W3C trace context carried in record headers so that consumers can
// continue the trace. It is its own module, so kpush itself does not
// depend on OpenTelemetry.
//
// # Getting started
//
//	k, err := kotel.New(
//		kotel.WithMeterProvider(mp),  // default: otel.GetMeterProvider()
//		kotel.WithTracerProvider(tp), // default: otel.GetTracerProvider()
//		kotel.WithPropagator(propagation.TraceContext{}),
//		kotel.WithInjectTraceContext(true),
//	)
//	p, err := kpush.New(kpush.WithBrokers(addrs...), kpush.WithHooks(k.Hooks()...))
//	reg, err := k.ObserveProducer(p) // optional: buffer and in-flight gauges
//
// # Metrics
//
// messaging.client.sent.messages counts every record passed to Send or
// SendAsync once, at its outcome; messaging.client.operation.duration
// records the time from Send to that outcome in seconds. Both carry
// messaging.system=kafka, messaging.operation.name=send,
// messaging.operation.type=send, messaging.destination.name,
// messaging.destination.partition.id (once a partition was chosen),
// kpush.outcome (acked, not_written, unknown) and, on failure,
// error.type (kpush.CauseOf's bounded cause name). The kpush.producer.*
// instruments add retries, request round trips, throttling, connection
// events and, through
// ObserveProducer, buffered bytes and messages and in-flight requests.
//
// # Tracing
//
// A span named "send <topic>" of kind PRODUCER starts when Send or
// SendAsync is called, as a child of the span in its ctx, and ends at the
// record's outcome: with the partition and offset on success, with status
// Error (its description the outcome category) and error.type otherwise.
// With WithInjectTraceContext the span's context is written into the
// record's headers by the propagator ("traceparent" and "tracestate" for
// propagation.TraceContext); a consumer calls Extract on the headers it
// reads and starts its own span from the returned context.
//
// # Concurrency
//
// A Kotel is safe for concurrent use and may instrument several
// producers. Its hooks run on kpush's goroutines and take no lock except
// a short per-shard one pairing a record's two tracer events.
package kotel
