package kpush

import (
	"time"
	"unsafe"

	"github.com/kpush/kpush/internal/batch"
)

// Header is one record header. Kafka allows duplicate keys; order is kept.
type Header struct {
	Key   string
	Value []byte
}

// Record is one Kafka record to produce. kpush never modifies it and does
// not copy Key, Value or Headers when it is sent: it reads that memory
// until the record's outcome is delivered, which is when Send returns or
// SendAsync's callback runs. From then on, whatever the outcome, the caller
// may reuse or change that memory; kpush never reads it again (when an
// outcome-unknown answer comes while a batch still holds the record, kpush
// first copies the record's bytes for that batch). Do not change it before.
type Record struct {
	// Topic to write to; empty means the producer's default topic
	// (WithDefaultTopic).
	Topic string
	// Key decides the partition (murmur2, like the Java client) unless the
	// partitioner is ManualPartitioner. nil means no key; an empty non-nil
	// key is a key.
	Key []byte
	// Value is the payload; nil is a null value (a tombstone on compacted
	// topics).
	Value []byte
	// Headers are sent in order.
	Headers []Header
	// Timestamp is the record's create time; zero means the time of Send.
	Timestamp time.Time
	// Partition is the record's own partition, used when UsePartition is
	// set or the partitioner is ManualPartitioner (the Java producer's
	// ProducerRecord partition); it must exist (else ErrInvalidPartition).
	// Otherwise it is ignored: the zero Record leaves the choice to the
	// partitioner.
	Partition int32
	// UsePartition sends the record to Partition whatever the
	// partitioner. false (the zero value) is "no partition": the
	// partitioner chooses.
	UsePartition bool
}

// Result is a record's acknowledgement.
type Result struct {
	Topic     string
	Partition int32
	// Offset in the partition; -1 with AcksNone, or when the broker
	// reported the record as a duplicate of an older write it no longer
	// has the offset for.
	Offset int64
	// Timestamp is the record's create time as sent.
	Timestamp time.Time
}

// The engine's header type has the same layout as Header; converting the
// slice in place avoids a copy per record. TestHeaderLayout guards this.
func engineHeaders(h []Header) []batch.Header {
	if len(h) == 0 {
		return nil
	}
	return unsafe.Slice((*batch.Header)(unsafe.Pointer(unsafe.SliceData(h))), len(h))
}
