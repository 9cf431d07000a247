package sink

// Response handling; runs on the connection's reader goroutine.

import (
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/internal/wire"
)

type action uint8

const (
	actOK      action = iota
	actRetry          // send again, same sequence
	actRefresh        // send again after a metadata refresh (leadership)
	actBump           // sequences went wrong: new epoch, then send again
	actFail           // the broker rejected the batch for good
)

// classify decides what a partition-level produce error code means. The
// second result reports whether the broker may have written the batch even
// though it answered with this error.
func classify(code int16, rewinding bool) (action, bool) {
	switch code {
	case 0:
		return actOK, false
	case kerr.DuplicateSequenceNumber.Code:
		// Already written by an earlier attempt (idempotence dedup).
		return actOK, false
	case kerr.NotLeaderForPartition.Code, kerr.LeaderNotAvailable.Code,
		kerr.UnknownTopicOrPartition.Code, kerr.FencedLeaderEpoch.Code,
		kerr.UnknownLeaderEpoch.Code, kerr.KafkaStorageError.Code,
		kerr.NotController.Code:
		// Leadership changed or the replica is unusable: nothing was
		// written; find the new leader.
		return actRefresh, false
	case kerr.RequestTimedOut.Code, kerr.NotEnoughReplicasAfterAppend.Code:
		// The leader may have appended the batch and then timed out
		// waiting for replicas: outcome unknown, retry (dedup makes it safe).
		return actRetry, true
	case kerr.NotEnoughReplicas.Code, kerr.CorruptMessage.Code,
		kerr.NetworkException.Code, kerr.ConcurrentTransactions.Code,
		kerr.ThrottlingQuotaExceeded.Code:
		// Rejected before appending; try again.
		return actRetry, false
	case kerr.OutOfOrderSequenceNumber.Code:
		// Expected after an earlier batch of this partition failed (the
		// broker saw a gap); otherwise our sequences and the broker's
		// disagree and only a new epoch fixes it (KIP-360).
		if rewinding {
			return actRetry, false
		}
		return actBump, false
	case kerr.UnknownProducerID.Code, kerr.InvalidProducerEpoch.Code:
		// The broker lost our producer state (retention, KIP-360) or fenced
		// the epoch: get a new epoch and resend.
		return actBump, false
	}
	if err := kerr.ErrorForCode(code); err != nil && kerr.IsRetriable(err) {
		return actRetry, false
	}
	// MESSAGE_TOO_LARGE, INVALID_RECORD, RECORD_LIST_TOO_LARGE,
	// INVALID_TIMESTAMP, TOPIC_AUTHORIZATION_FAILED,
	// CLUSTER_AUTHORIZATION_FAILED, UNSUPPORTED_COMPRESSION_TYPE,
	// INVALID_REQUIRED_ACKS, UNSUPPORTED_FOR_MESSAGE_FORMAT, ...
	return actFail, false
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
func (s *Sink) handle(batches []*Batch, r kmsg.Response, reqErr error, sent time.Time) {
	e := s.eng
	var resp *kmsg.ProduceResponse
	if r != nil {
		resp = r.(*kmsg.ProduceResponse)
		rtt := int64(time.Since(sent))
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
			s.throttleUntil = time.Now().Add(time.Duration(resp.ThrottleMillis) * time.Millisecond)
		}
	}
	reqUnknown := reqErr != nil && !errors.Is(reqErr, errNotSent)
	refresh := reqUnknown
	now := time.Now().UnixNano()
	var done []*Pending
	var finished []*Batch
	for _, b := range batches {
		p := b.p
		act, maybeWritten := actOK, false
		var cause error
		base := int64(-1)
		switch {
		case reqErr != nil:
			act, maybeWritten, cause = actRetry, reqUnknown, reqErr
		case resp == nil: // acks=0: written to the socket, no answer will come
		default:
			rp, ok := findPartition(resp, p.Topic, p.ID)
			if !ok {
				act, maybeWritten, cause = actRetry, true, fmt.Errorf("%w: partition missing from produce response", wire.ErrMaybeDelivered)
				break
			}
			p.mu.Lock()
			rewinding := p.rewind
			p.mu.Unlock()
			act, maybeWritten = classify(rp.ErrorCode, rewinding)
			base = rp.BaseOffset
			if act != actOK {
				cause = kerr.ErrorForCode(rp.ErrorCode)
				if rp.ErrorMessage != nil && *rp.ErrorMessage != "" {
					cause = fmt.Errorf("%w: %s", cause, *rp.ErrorMessage)
				}
			}
		}

		p.mu.Lock()
		p.inflight--
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
				rec.finishSent(off, nil, false)
			}
			done = append(done, b.recs...)
			finished = append(finished, b)
		case actRetry, actRefresh, actBump:
			if act == actRefresh {
				refresh = true
			}
			if act == actBump && b.id == p.id {
				e.requestBump(b.id)
			}
			if cause != nil {
				e.cfg.Logger.Debug("kpush: retrying batch", "topic", p.Topic, "partition", p.ID, "err", cause)
			}
			p.rewind = true
			p.rewound = append(p.rewound, b)
		case actFail:
			done = p.failBatchLocked(b, cause, b.unknown, done)
			finished = append(finished, b)
			p.rewind = true // later in-flight batches come back before anything is sent
			p.dropSeqLocked(b)
		}
		if p.rewind && p.inflight == 0 {
			done = p.finishRewindLocked(now, done)
		}
		q := p.queueLocked()
		p.mu.Unlock()
		if q != nil && q != s {
			q.nudge()
		}
	}
	s.inflight.Add(-1)
	e.Stats.Inflight.Add(-1)
	s.nudge()
	notifyAll(done, &s.cb)
	for _, b := range finished {
		e.putRecSlice(b.recs)
		b.recs = nil
	}
	if refresh {
		e.cfg.TriggerMetadata()
	}
}
