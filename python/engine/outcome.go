package main

// Goroutines and ownership (outcomes): none; outcome is a pure function
// called by whichever goroutine delivers a record's result.

import (
	"context"
	"errors"

	"github.com/kpush/kpush"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Cause codes, shared with kpush/_errors.py (CAUSES).
const (
	causeNone = iota
	causeBufferFull
	causeDeliveryTimeout
	causeAuthentication
	causeClosed
	causeRecordTooLarge
	causeUnknownTopic
	causeInvalidTopic
	causeNoTopic
	causeInvalidHeader
	causeInvalidTimestamp
	causeInvalidPartition
	causeSequenceReset
	causeNoBroker
	causeCancelled
	causeDeadline
	causeBroker
	causeOther
	causeInvalidConfig
)

var causes = []struct {
	err   error
	cause int32
}{
	{kpush.ErrBufferFull, causeBufferFull},
	{kpush.ErrDeliveryTimeout, causeDeliveryTimeout},
	{kpush.ErrAuthentication, causeAuthentication},
	{kpush.ErrClosed, causeClosed},
	{kpush.ErrRecordTooLarge, causeRecordTooLarge},
	{kpush.ErrUnknownTopic, causeUnknownTopic},
	{kpush.ErrInvalidTopic, causeInvalidTopic},
	{kpush.ErrNoTopic, causeNoTopic},
	{kpush.ErrInvalidHeader, causeInvalidHeader},
	{kpush.ErrInvalidTimestamp, causeInvalidTimestamp},
	{kpush.ErrInvalidPartition, causeInvalidPartition},
	{kpush.ErrSequenceReset, causeSequenceReset},
	{kpush.ErrNoBroker, causeNoBroker},
	{context.Canceled, causeCancelled},
	{context.DeadlineExceeded, causeDeadline},
	{kpush.ErrInvalidConfig, causeInvalidConfig},
	{errConfig, causeInvalidConfig},
}

// classify returns the cause code and, for broker errors, the Kafka error
// code.
func classify(err error) (cause, code int32) {
	for _, c := range causes {
		if errors.Is(err, c.err) {
			return c.cause, 0
		}
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return causeBroker, int32(ke.Code)
	}
	return causeOther, 0
}

// outcome builds the completion for one record.
func outcome(id uint64, res kpush.Result, err error) completion {
	c := completion{id: id, partition: res.Partition, offset: res.Offset}
	if !res.Timestamp.IsZero() {
		c.timestamp = res.Timestamp.UnixMilli()
	}
	if err == nil {
		c.kind = kindOK
		return c
	}
	c.kind = kindNotWritten
	if errors.Is(err, kpush.ErrOutcomeUnknown) {
		c.kind = kindUnknown
	}
	var pe *kpush.ProduceError
	if errors.As(err, &pe) {
		c.partition = pe.Partition
	} else {
		c.partition = -1
	}
	c.cause, c.code = classify(err)
	c.msg = err.Error()
	return c
}
