package sink

// Response handling; runs on the connection's reader goroutine, or on a
// Send's goroutine that reads its own lone request's response (a lent
// read: internal/wire/ownread.go, Sink.kick).

import (
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/internal/batch"
	"github.com/kpush/kpush/internal/clock"
	"github.com/kpush/kpush/internal/idem"
	"github.com/kpush/kpush/internal/wire"
)

type action uint8

const (
	actOK      action = iota
	actRetry          // send again, same sequence
	actRefresh        // send again after a metadata refresh (leadership)
	actBump           // sequences went wrong: rewind, wait for a new epoch (phaseEpoch), then send again renumbered
	actFail           // the broker rejected the batch for good
)

// classify decides what a partition-level produce error code means. The
// second result reports whether the broker may have written the batch even
// though it answered with this error; acksAll is whether the request used
// acks=all (leadership errors can then come after the leader appended).
func classify(code int16, rewinding, acksAll bool) (action, bool) {
	switch code {
	case 0:
		return actOK, false
	case kerr.DuplicateSequenceNumber.Code:
		// Already written by an earlier attempt (idempotence dedup).
		return actOK, false
	case kerr.NotLeaderForPartition.Code, kerr.UnknownTopicOrPartition.Code,
		kerr.KafkaStorageError.Code:
		// Leadership moved or the replica failed. With acks=all the broker
		// can answer so after appending locally (a delayed produce that
		// lost leadership), so the new leader may have the batch.
		return actRefresh, acksAll
	case kerr.LeaderNotAvailable.Code, kerr.FencedLeaderEpoch.Code,
		kerr.UnknownLeaderEpoch.Code, kerr.NotController.Code:
		// Checked before appending: nothing was written.
		return actRefresh, false
	case kerr.NetworkException.Code:
		// A broker-side connection problem; the append may have happened.
		return actRefresh, true
	case kerr.RequestTimedOut.Code, kerr.NotEnoughReplicasAfterAppend.Code:
		// The leader may have appended the batch and then timed out
		// waiting for replicas: outcome unknown, retry (dedup makes it safe).
		return actRetry, true
	case kerr.NotEnoughReplicas.Code, kerr.CorruptMessage.Code,
		kerr.ConcurrentTransactions.Code, kerr.ThrottlingQuotaExceeded.Code:
		// Rejected before appending; try again.
		return actRetry, false
	case kerr.OutOfOrderSequenceNumber.Code:
		// Expected after an earlier batch of this partition failed (the
		// broker saw a gap); otherwise our sequences and the broker's
		// disagree and only a new epoch fixes it (KIP-360). Not written.
		if rewinding {
			return actRetry, false
		}
		return actBump, false
	case kerr.UnknownProducerID.Code, kerr.InvalidProducerEpoch.Code:
		// The broker lost our producer state (retention, KIP-360) or fenced
		// the epoch: get a new epoch and resend. Not written.
		return actBump, false
	case kerr.MessageTooLarge.Code, kerr.RecordListTooLarge.Code,
		kerr.InvalidRecord.Code, kerr.InvalidTimestamp.Code,
		kerr.TopicAuthorizationFailed.Code, kerr.ClusterAuthorizationFailed.Code,
		kerr.TransactionalIDAuthorizationFailed.Code,
		kerr.UnsupportedCompressionType.Code, kerr.InvalidRequiredAcks.Code,
		kerr.UnsupportedForMessageFormat.Code, kerr.InvalidTopicException.Code,
		kerr.UnsupportedVersion.Code, kerr.InvalidRequest.Code:
		// Validated before appending: rejected for good, not written.
		return actFail, false
	}
	if err := kerr.ErrorForCode(code); err != nil && kerr.IsRetriable(err) {
		return actRetry, true
	}
	// Unknown or unexpected (UNKNOWN_SERVER_ERROR, ...): the broker may
	// have failed after appending, so the outcome is unknown.
	return actFail, true
}

func findPartition(resp *kmsg.ProduceResponse, topic string, part int32) (*kmsg.ProduceResponseTopicPartition, bool) {
	for i := range resp.Topics {
		t := &resp.Topics[i]
		if t.Topic != topic {
			continue
		}
		for j := range t.Partitions {
			if t.Partitions[j].Partition == part {
				return &t.Partitions[j], true
			}
		}
	}
	return nil, false
}

// handle applies a produce response (or a request error) to its batches.
// inline is true only on the connection's reader goroutine, which holds no
// kpush lock: Inline records' callbacks may then run here (startQueues).
// With acks=0 and for a request not written, handle runs on the sender,
// under Sink.own, and passes false.
func (s *Sink) handle(batches []*Batch, r kmsg.Response, reqErr error, sent int64, inline bool) {
	e := s.eng
	var resp *kmsg.ProduceResponse
	if r != nil {
		resp = r.(*kmsg.ProduceResponse)
		rtt := clock.Mono() - sent
		old := s.latency.Load()
		if old == 0 {
			s.latency.Store(rtt)
		} else {
			s.latency.Store(old + (rtt-old)/8)
		}
		if resp.ThrottleMillis > 0 {
			// KIP-219: the broker throttles after answering; back off
			// before the next request to this broker.
			e.Stats.Throttles.Add(1)
			s.throttleUntil.Store(clock.Mono() + int64(resp.ThrottleMillis)*int64(time.Millisecond))
			if e.cfg.Hooks.Throttle != nil {
				e.cfg.Hooks.Throttle(s.Node, s.Addr(), time.Duration(resp.ThrottleMillis)*time.Millisecond)
			}
		}
	}
	reqUnknown := reqErr != nil && !errors.Is(reqErr, errNotSent)
	refresh := reqUnknown
	now := clock.Mono()
	var done []*Pending
	var finished []*Batch
	var starts cbStarts
	for _, b := range batches {
		p := b.p
		from := len(done) // done[from:] are p's outcomes of this batch
		act, maybeWritten := actOK, false
		consequence := false // refused only because an earlier batch failed
		var cause error
		var rp *kmsg.ProduceResponseTopicPartition
		base := int64(-1)
		switch {
		case reqErr != nil:
			act, maybeWritten, cause = actRetry, reqUnknown, reqErr
		case resp == nil: // acks=0: written to the socket, no answer will come
		default:
			var ok bool
			if rp, ok = findPartition(resp, p.Topic, p.ID); !ok {
				act, maybeWritten, cause = actRetry, true, fmt.Errorf("%w: partition missing from produce response", wire.ErrMaybeDelivered)
				break
			}
			p.mu.Lock()
			rewinding := p.phase == phaseRewind
			p.mu.Unlock()
			act, maybeWritten = classify(rp.ErrorCode, rewinding, e.cfg.Acks == -1)
			consequence = rewinding && rp.ErrorCode == kerr.OutOfOrderSequenceNumber.Code
			base = rp.BaseOffset
			if act != actOK {
				cause = kerr.ErrorForCode(rp.ErrorCode)
				if rp.ErrorMessage != nil && *rp.ErrorMessage != "" {
					cause = fmt.Errorf("%w: %s", cause, *rp.ErrorMessage)
				}
			}
		}

		retried := 0 // records sent again (HookRetry)
		if cause != nil && (act == actRetry || act == actRefresh || act == actBump) {
			// Before taking the lock: the logger is user code (a handler
			// may send a record to this very partition).
			e.cfg.Logger.Debug("kpush: retrying batch", "topic", p.Topic, "partition", p.ID, "err", cause)
		}
		p.mu.Lock()
		p.inflight--
		p.answered = max(p.answered, b.ord)
		if e.cfg.Hooks.Stamps {
			b.answered = now // finishSent copies it to the records ended here
		}
		if maybeWritten {
			b.unknown = true
		}
		switch act {
		case actOK:
			for i, rec := range b.recs {
				off := int64(-1)
				if base >= 0 {
					off = base + int64(i)
				}
				rec.finishSent(b, off, nil, false)
			}
			done = p.completeLocked(b, b.recs, done)
			finished = append(finished, b)
			if b.id == p.id {
				p.ackedOrd = max(p.ackedOrd, b.ord)
				p.stepLocked(evAcked)
			}
			p.fails = 0 // the partition works again: the next failure backs off from the start
		case actRetry, actRefresh, actBump:
			if act == actRefresh {
				refresh = true
			}
			if act == actBump && b.id == p.id {
				// The broker lost (or never had) our state: new epoch, and
				// one batch in flight until the broker acknowledges again.
				// Rewind first: once the batches in flight are back, the
				// partition waits for the new epoch (phaseEpoch).
				c := cause // a copy: taking cause's address put it on the heap for every batch
				e.bumpCause.Store(&c)
				p.stepLocked(evLostState)
				p.askBumpLocked()
			} else {
				p.stepLocked(evFailed)
			}
			p.retriable = p.retriable || !consequence
			p.rewound = append(p.rewound, b)
			p.blockLocked(b)
			retried = len(b.recs)
		case actFail:
			p.stepLocked(evFailed) // later in-flight batches come back before anything is sent
			if len(b.recs) > 1 && !b.unknown && errors.Is(cause, kerr.MessageTooLarge) {
				// Like the Java producer: split the batch and resend the
				// halves with the same sequences (their count is unchanged).
				retried = len(b.recs)
				halves := p.splitLocked(b)
				p.rewound = append(p.rewound, halves...)
				for _, h := range halves {
					p.blockLocked(h)
				}
				e.Stats.Retries.Add(1)
				break
			}
			if rp != nil && !b.unknown && len(rp.ErrorRecords) > 0 {
				if bad, _ := p.failRecordsLocked(b, rp.ErrorRecords, cause, nil); len(bad) > 0 {
					done = p.completeLocked(b, bad, done) // b is blocked again below
					e.putBuf(b.bytes)
					b.bytes = nil
					p.dropSeqLocked(b) // it shrank: later sequences move down
					p.rewound = append(p.rewound, b)
					p.blockLocked(b)
					retried = len(b.recs)
					break
				}
			}
			done = p.failBatchLocked(b, cause, b.unknown, done)
			finished = append(finished, b)
			p.dropSeqLocked(b)
		}
		if e.cfg.Hooks.Stamps {
			b.answered = 0
		}
		done = p.settleLocked(now, done)
		// Into p's callback queue before p is unlocked: from then on p may
		// be sent on its new leader, whose reader could queue later
		// outcomes of p ahead of these (docs/internals-flakes.md). The
		// queues start below, as the response's bookkeeping is done.
		done = e.queueAsync(done, from, false, &starts)
		q := p.queueLocked()
		p.unlock()
		if q != nil && q != s {
			q.nudge()
		}
		if retried > 0 && e.cfg.Hooks.Retry != nil {
			e.cfg.Hooks.Retry(p.Topic, p.ID, retried, cause)
		}
	}
	s.inflight.Add(-1)
	s.answers.Add(1) // ends a coalescing wait (coalesce.go)
	e.Stats.Inflight.Add(-1)
	if s.hasReady() {
		// A slot is free for partitions that wait (a partition queued
		// later nudges or sends itself: Add, kick). An idle sink's loop
		// is not woken for nothing, so the next Send can write at once.
		s.nudge()
	}
	s.eng.notifyAll(done, &s.cb, inline) // sync outcomes (async ones are queued)
	e.startQueues(&starts, &s.cb, inline)
	for _, b := range finished {
		e.putRecSlice(b.recs)
		e.putBuf(b.bytes) // the request that carried it is done
		b.recs, b.bytes = nil, nil
	}
	e.reportLeaderHints(resp) // KIP-951, see hint.go
	if refresh {
		e.cfg.TriggerMetadata()
	}
}

// splitLocked splits a batch the broker found too large into two halves
// that keep its sequence range, to be encoded again.
func (p *PartitionQueue) splitLocked(b *Batch) []*Batch {
	h := len(b.recs) / 2
	second := &Batch{p: p, recs: append(p.eng.getRecSlice(), b.recs[h:]...), id: b.id,
		seq: b.seq, ord: b.ord, sub: b.sub + h, deadline: b.deadline, attempts: b.attempts, unknown: b.unknown}
	if b.id != idem.None {
		second.seq = addSeq(b.seq, h)
	}
	clear(b.recs[h:])
	p.eng.putBuf(b.bytes) // the request that carried it is done (its response is here)
	b.recs, b.bytes = b.recs[:h], nil
	b.size, second.size = recsSize(b.recs), recsSize(second.recs)
	return []*Batch{b, second}
}

// recsSize is the unencoded size of a batch of recs.
func recsSize(recs []*Pending) int {
	n := batch.BatchOverhead
	for _, r := range recs {
		n += int(r.Size)
	}
	return n
}

// failRecordsLocked handles a batch the broker rejected, not written,
// naming the records at fault (KIP-467, Produce v8+): those fail with cause
// (and the broker's message for them), the others stay in b, in order, to
// be sent again. When the broker named every record or none that exists,
// nothing changes and bad is nil: the whole batch fails.
func (p *PartitionQueue) failRecordsLocked(b *Batch, errs []kmsg.ProduceResponseTopicPartitionErrorRecord, cause error, out []*Pending) (bad, _ []*Pending) {
	named := make(map[int32]*string, len(errs))
	for _, er := range errs {
		if er.RelativeOffset >= 0 && int(er.RelativeOffset) < len(b.recs) {
			named[er.RelativeOffset] = er.ErrorMessage
		}
	}
	if len(named) == 0 || len(named) == len(b.recs) {
		return nil, out
	}
	keep := b.recs[:0]
	size := batch.BatchOverhead
	for i, r := range b.recs {
		msg, ok := named[int32(i)]
		if !ok {
			keep = append(keep, r)
			size += int(r.Size)
			continue
		}
		err := cause
		if msg != nil && *msg != "" {
			err = fmt.Errorf("%w: record %d: %s", cause, i, *msg)
		}
		r.finishSent(b, -1, err, false)
		bad = append(bad, r)
	}
	clear(b.recs[len(keep):])
	b.recs, b.size = keep, size
	return bad, append(out, bad...)
}
