package kpush

// Flush and Close: waiting for the outcomes of records accepted before the
// call (buffer.Tracker generations), then, for Close, stopping the engine
// and failing what is left. Both run on the caller's goroutine; Close
// waits for every kpush goroutine (sink.Engine.Wait) before it returns.

import (
	"context"

	"github.com/kpush/kpush/internal/sink"
)

// Flush waits until every record accepted before the call has had its
// outcome delivered — its Send returned or its SendAsync callback returned
// (the Java producer's flush()). Records sent while Flush waits are not
// waited for, so Flush returns under steady load. Calling Flush from a
// callback deadlocks.
//
// Flush and Close report errors the same way: nil when every waited-for
// record has its outcome (even if ctx is done already); when ctx ends
// first, a *ProduceError (empty Topic, Partition -1) that matches
// ErrOutcomeUnknown and wraps ctx's error: the records still waited for
// may or may not be written, and each
// gets its own outcome later (Flush) or before Close returns. ErrClosed,
// unwrapped, for Flush after Close and for a second Close.
func (p *Producer) Flush(ctx context.Context) error {
	if p.closed.Load() {
		// Every outcome was delivered (or is being, by Close); the call
		// is a mistake.
		return ErrClosed
	}
	b := p.undelivered.Seal()
	if p.testHookFlushSealed != nil {
		p.testHookFlushSealed()
	}
	return waitError(b.Wait(ctx))
}

// waitError is Flush's and Close's error when ctx ended before the records
// they waited for had their outcomes.
func waitError(err error) error {
	if err == nil {
		return nil
	}
	return &ProduceError{Partition: -1, Unknown: true, Err: err}
}

// Close stops taking records, waits (bounded by ctx) for the records
// accepted before it to be sent, then fails whatever is left: records
// never sent with ErrClosed (ErrNotWritten), records in flight with
// ErrOutcomeUnknown. Every record gets exactly one outcome before Close
// returns, and every kpush goroutine has exited. Errors are shaped as
// Flush's (see there): the *ProduceError wrapping ctx's error if Close
// gave up waiting, ErrClosed if the producer was already closed.
func (p *Producer) Close(ctx context.Context) error {
	first := false
	p.closeOnce.Do(func() {
		first = true
		p.closed.Store(true)
		close(p.closing)
		p.closeErr = waitError(p.undelivered.Wait(ctx))
		p.eng.Stop()
		p.eng.Wait() // sinks close connections; in-flight batches come back as unknown
		// Fails what is left and closes every partition, so a Send that
		// passed the closed check above cannot strand a record.
		sink.FailAll(p.allPartitions(), ErrClosed)
	})
	if !first {
		return ErrClosed
	}
	return p.closeErr
}
