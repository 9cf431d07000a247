package kpush

// Partitioners: the public Partitioner interface, the built-in values and
// the choice of a record's partition on the send path (enqueue).
//
// Goroutines and ownership: nothing here starts a goroutine or takes a
// lock. A topic's picker (partitioner.Picker) is created once, when the
// topic is first used, and then called concurrently by every sending
// goroutine; SetAvailable is called by the metadata goroutine. Load
// counters (adaptive keyless partitioning) are added to by senders and
// subtracted from by whichever goroutine delivers a record's outcome.

import (
	"fmt"

	"github.com/kpush/kpush/internal/partitioner"
)

// Partitioner chooses the partitions of records. The producer calls
// ForTopic when a record is first sent to a topic, on the sending
// goroutine and under no kpush lock, and then asks the returned
// TopicPartitioner for every record of that topic. Senders racing to first
// use a topic may each call ForTopic; one result is kept and the others
// are dropped. The
// built-in partitioners (StickyPartitioner, the default,
// UniformStickyPartitioner, CRC32Partitioner, RoundRobinPartitioner and
// ManualPartitioner) are values of it; a custom partitioner implements it
// or is a PartitionerFunc. Whatever the partitioner, a record with
// UsePartition set goes to its own Partition.
//
// A custom partitioner plays the role of the Java producer's
// partitioner.class. There is no "on new batch" signal: like the Java
// client since KIP-794 (which deprecated Partitioner.onNewBatch), a sticky
// partitioner should switch after a number of bytes, counted from
// Partition's records.
//
// A partitioner runs on the goroutine that sends the record. If it panics,
// kpush does not recover: the panic propagates out of that Send, SendAsync,
// SendCancelable or TrySendCancelable call, the record is not buffered and
// nothing of it is kept (buffer space TrySendCancelable reserved first is
// given back), and the producer stays usable.
type Partitioner interface {
	// ForTopic returns the partitioner of one topic; it may hold
	// per-topic state (a sticky partition, a counter).
	ForTopic(topic string) TopicPartitioner
}

// TopicPartitioner chooses partitions for one topic's records.
//
// Partition is called for every record of the topic without UsePartition
// (keyed and keyless alike), concurrently from every sending goroutine, so
// it must be safe for concurrent use; it should be fast and must not
// block, since it runs on the send path. r is the record as passed to Send
// (r.Topic is empty when the producer's default topic applies; do not
// modify r); n is the topic's current partition count, at least 1, and may
// grow between calls. It returns a partition in [0, n); any other value
// fails the record with ErrInvalidPartition. A panic in Partition is not
// recovered.
type TopicPartitioner interface {
	Partition(r *Record, n int) int
}

// AvailabilityPartitioner is an optional interface of a TopicPartitioner:
// when implemented, the producer calls SetAvailable from its metadata
// goroutine, under no kpush lock and concurrently with Partition (a slow
// SetAvailable delays metadata updates), whenever it learns which of the
// topic's partitions have a leader: ok[i] for partition i (len(ok) is the
// partition count; ok must not be kept, it is reused). A partitioner can
// use it to skip partitions whose records would wait for a leader, as the
// built-in keyless choices do (KIP-794).
type AvailabilityPartitioner interface {
	SetAvailable(ok []bool)
}

// PartitionerFunc is a stateless Partitioner (and TopicPartitioner) from a
// function: f(topic, r, n) returns r's partition in [0, n), where topic is
// the record's resolved topic. It must be safe for concurrent use.
type PartitionerFunc func(topic string, r *Record, n int) int

// ForTopic implements Partitioner.
func (f PartitionerFunc) ForTopic(topic string) TopicPartitioner {
	return funcTopic{f: f, topic: topic}
}

// funcTopic is a PartitionerFunc bound to one topic.
type funcTopic struct {
	f     PartitionerFunc
	topic string
}

// Partition implements TopicPartitioner.
func (t funcTopic) Partition(r *Record, n int) int { return t.f(t.topic, r, n) }

// builtinPartitioner is the type of the built-in partitioners.
type builtinPartitioner uint8

// The built-in partitioners, values of Partitioner.
const (
	// StickyPartitioner (the default): keyed records go to
	// murmur2(key) % partitions, exactly like the Java client; keyless
	// records stick to one partition for a batch's worth of bytes (16
	// KiB), then switch to another one that has a leader, preferring
	// partitions with fewer bytes waiting for an outcome (the Java
	// client's adaptive partitioning, KIP-794, weighting by queued
	// batches), so that a slow broker gets fewer new records.
	StickyPartitioner builtinPartitioner = iota
	// CRC32Partitioner: keyed records go to crc32(key) % partitions like
	// librdkafka's "consistent_random"; keyless records as
	// StickyPartitioner.
	CRC32Partitioner
	// RoundRobinPartitioner sends each record, keyed or not, to the next
	// partition (that has a leader) in turn.
	RoundRobinPartitioner
	// ManualPartitioner sends each record to Record.Partition, as if
	// every record had UsePartition set.
	ManualPartitioner
	// UniformStickyPartitioner is StickyPartitioner without the load
	// weighting: a keyless switch picks uniformly among the other
	// partitions that have a leader (the Java client with
	// partitioner.adaptive.partitioning.enable=false).
	UniformStickyPartitioner
)

// String returns the partitioner's Go name ("StickyPartitioner", ...).
func (b builtinPartitioner) String() string {
	switch b {
	case StickyPartitioner:
		return "StickyPartitioner"
	case CRC32Partitioner:
		return "CRC32Partitioner"
	case RoundRobinPartitioner:
		return "RoundRobinPartitioner"
	case ManualPartitioner:
		return "ManualPartitioner"
	case UniformStickyPartitioner:
		return "UniformStickyPartitioner"
	}
	return fmt.Sprintf("builtinPartitioner(%d)", uint8(b))
}

// ForTopic implements Partitioner. The result also implements
// AvailabilityPartitioner, so a custom partitioner can delegate to a
// built-in one (for example for its keyless records). Delegated to this
// way, the built-in keyless choice skips partitions without a leader (when
// SetAvailable is forwarded) but does not see partition loads: the
// producer tracks them only for a built-in partitioner passed to
// WithPartitioner itself. ManualPartitioner's Partition returns
// r.Partition.
func (b builtinPartitioner) ForTopic(string) TopicPartitioner {
	if b == ManualPartitioner {
		return manualTopic{}
	}
	return builtinTopic{b.picker()}
}

// picker returns a new internal picker for one topic.
func (b builtinPartitioner) picker() partitioner.Picker {
	switch b {
	case CRC32Partitioner:
		return partitioner.NewPicker(partitioner.AdaptiveCRC32, stickyBytes)
	case RoundRobinPartitioner:
		return partitioner.NewPicker(partitioner.RoundRobin, stickyBytes)
	case UniformStickyPartitioner, ManualPartitioner:
		// ManualPartitioner's records carry their own partition: no
		// choice to weigh, so no load counters to keep.
		return partitioner.NewPicker(partitioner.Sticky, stickyBytes)
	}
	return partitioner.NewPicker(partitioner.Adaptive, stickyBytes)
}

// builtinTopic is a built-in partitioner's TopicPartitioner.
type builtinTopic struct{ p partitioner.Picker }

// Partition implements TopicPartitioner, counting the key and value
// toward the sticky switch.
func (t builtinTopic) Partition(r *Record, n int) int {
	return t.p.Pick(r.Key, len(r.Key)+len(r.Value)+recordFraming, n)
}

// recordFraming approximates a record's encoded size beyond its key and
// value, for a builtinTopic called without the producer's exact size.
const recordFraming = 16

// SetAvailable implements AvailabilityPartitioner.
func (t builtinTopic) SetAvailable(ok []bool) { t.p.SetAvailable(ok) }

// manualTopic is ManualPartitioner's TopicPartitioner.
type manualTopic struct{}

// Partition implements TopicPartitioner.
func (manualTopic) Partition(r *Record, _ int) int { return int(r.Partition) }

// newTopicPicker returns the picker of topic name for the configured
// partitioner. Built-ins get their internal picker directly (no interface
// hop on the send path, and load counters); a custom partitioner is
// wrapped.
func newTopicPicker(p Partitioner, name string) partitioner.Picker {
	if b, ok := p.(builtinPartitioner); ok {
		return b.picker()
	}
	tp := p.ForTopic(name)
	if b, ok := tp.(builtinTopic); ok {
		return b.p
	}
	return &customPicker{tp: tp}
}

// customPicker adapts a custom TopicPartitioner to the topic's picker
// slot; choosePartition calls tp directly.
type customPicker struct{ tp TopicPartitioner }

// Pick implements partitioner.Picker; never called (choosePartition
// passes the whole record to tp).
func (c *customPicker) Pick([]byte, int, int) int {
	panic("kpush: customPicker.Pick called")
}

// SetAvailable implements partitioner.Picker, forwarding to tp when it is
// an AvailabilityPartitioner.
func (c *customPicker) SetAvailable(ok []bool) {
	if a, ok2 := c.tp.(AvailabilityPartitioner); ok2 {
		a.SetAvailable(ok)
	}
}

// Counter implements partitioner.Picker: custom partitioners get no load
// counters.
func (c *customPicker) Counter(int) *partitioner.Counter { return nil }

// choosePartition returns r's partition among n: its own (UsePartition, or
// every record under ManualPartitioner) or pk's choice. size is r's
// encoded size. The error matches ErrInvalidPartition; bad is then the
// rejected partition.
func choosePartition(pk partitioner.Picker, manual bool, r *Record, size, n int) (part int, bad int32, err error) {
	switch {
	case manual || r.UsePartition:
		if r.Partition < 0 || int(r.Partition) >= n {
			return 0, r.Partition, fmt.Errorf("%w %d: the topic has %d partitions", ErrInvalidPartition, r.Partition, n)
		}
		return int(r.Partition), 0, nil
	}
	if c, ok := pk.(*customPicker); ok {
		// A copy: passing r to user code through an interface would make
		// every Send's record escape to the heap, custom partitioner or not.
		rc := *r
		part := c.tp.Partition(&rc, n)
		if part < 0 || part >= n {
			return 0, int32(max(min(part, 1<<31-1), -1<<31)), fmt.Errorf("%w %d: the partitioner chose it and the topic has %d partitions", ErrInvalidPartition, part, n)
		}
		return part, 0, nil
	}
	return pk.Pick(r.Key, size, n), 0, nil
}

// addLoad counts a record of size bytes queued on a partition whose load
// counter is c (nil: not counted), and returns c for takeLoad.
func addLoad(c *partitioner.Counter, size int32) *partitioner.Counter {
	if c != nil {
		c.Add(int64(size))
	}
	return c
}

// takeLoad subtracts a record's size from the counter *c once its outcome
// is delivered or it was withdrawn (a canceled Send or handle; an
// abandoned Send's record still counts until its batch is done) and
// clears *c. Only one goroutine may call it per record: its Notify, or
// whoever withdrew it (Notify then never runs), or SendHandle under h.mu.
func takeLoad(c **partitioner.Counter, size int32) {
	if *c != nil {
		(*c).Add(-int64(size))
		*c = nil
	}
}

// pickUndoing is admit's choosePartition; a custom partitioner runs user
// code that may panic: the panic goes on to the caller, after the space
// reserved (if any) has been given back (TrySendCancelable reserves first).
func pickUndoing(p *Producer, pk partitioner.Picker, r *Record, size, n int, reserved bool) (part int, bad int32, err error) {
	if reserved {
		picked := false
		defer func() {
			if !picked { // panicking
				p.lim.Release(int64(size))
			}
		}()
		part, bad, err = choosePartition(pk, p.cfg.partitioner == ManualPartitioner, r, size, n)
		picked = true
		return part, bad, err
	}
	return choosePartition(pk, p.cfg.partitioner == ManualPartitioner, r, size, n)
}
