// Package batch encodes Kafka RecordBatch v2 (magic 2) bytes for Produce
// requests, and decodes them back for tests and tools.
//
// The encoder is the producer's hot path: a Builder appends records into a
// buffer that starts with room for the batch header, so Append does not
// allocate once the buffer has grown to the usual batch size, and
// AppendFinish writes the header in place and hands that buffer over:
// a record's bytes are copied once, by Append (compression writes its
// output straight behind the header instead). Finish returns a copy and
// keeps the records.
//
// Goroutines and ownership: the package starts none. A Builder belongs to
// one goroutine (the sink's). A batch AppendFinish returns belongs to the
// caller from then on (the sink keeps it for retries and recycles it once
// its request is answered), and the dst buffer passed in belongs to the
// Builder: buffers change hands, they are never shared.
//
// Wire layout of a batch (all integers big endian):
//
//	offset  size  field
//	0       8     baseOffset (always 0 from a producer)
//	8       4     batchLength (bytes after this field)
//	12      4     partitionLeaderEpoch (-1)
//	16      1     magic (2)
//	17      4     crc (CRC-32C of bytes 21..end)
//	21      2     attributes (codec in bits 0-2)
//	23      4     lastOffsetDelta
//	27      8     firstTimestamp
//	35      8     maxTimestamp
//	43      8     producerId
//	51      2     producerEpoch
//	53      4     baseSequence
//	57      4     record count
//	61      ...   records, compressed as a whole if a codec is set
package batch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"strings"
)

// Header is one record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is what gets encoded. TimestampMs is milliseconds since the Unix
// epoch. A nil Key or Value is encoded as null (length -1), an empty one as
// length 0.
type Record struct {
	Key, Value  []byte
	TimestampMs int64
	Headers     []Header // last: the sink's Pending keeps the fields before it in one cache line
}

// Codec is a Kafka compression codec; values equal the attribute bits of
// RecordBatch v2.
type Codec int8

// The codecs Kafka defines.
const (
	None   Codec = 0
	Gzip   Codec = 1
	Snappy Codec = 2
	LZ4    Codec = 3
	Zstd   Codec = 4
)

var codecNames = [...]string{None: "none", Gzip: "gzip", Snappy: "snappy", LZ4: "lz4", Zstd: "zstd"}

// String returns the codec's lowercase name as used in Kafka's
// compression.type setting: "none", "gzip", "snappy", "lz4" or "zstd".
func (c Codec) String() string {
	if c >= 0 && int(c) < len(codecNames) {
		return codecNames[c]
	}
	return fmt.Sprintf("Codec(%d)", int8(c))
}

// valid reports whether c is one of the codecs Kafka defines.
func (c Codec) valid() bool { return c >= None && c <= Zstd }

// ParseCodec returns the codec named s, ignoring case. The error names the
// bad value and the valid ones.
func ParseCodec(s string) (Codec, error) {
	for c, name := range codecNames {
		if strings.EqualFold(s, name) {
			return Codec(c), nil
		}
	}
	return None, fmt.Errorf("kpush: unknown compression codec %q (valid: %s)", s, strings.Join(codecNames[:], ", "))
}

// MaxRecordOverhead is the most bytes a record without headers takes inside
// a batch beyond its key and value: the length varint (5), attributes (1),
// timestampDelta (10), offsetDelta (5), key and value lengths (5 each) and
// the header count (5). Each header adds at most 10 bytes beyond its key and
// value.
const MaxRecordOverhead = 5 + 1 + 10 + 5 + 5 + 5 + 5

// BatchOverhead is the fixed RecordBatch v2 header size (61 bytes).
const BatchOverhead = 61

// Byte offsets of the batch header fields.
const (
	offLength          = 8
	offLeaderEpoch     = 12
	offMagic           = 16
	offCRC             = 17
	offAttributes      = 21
	offLastOffsetDelta = 23
	offFirstTimestamp  = 27
	offMaxTimestamp    = 35
	offProducerID      = 43
	offProducerEpoch   = 51
	offBaseSequence    = 53
	offNumRecords      = 57
)

// codecMask selects the compression codec from the attributes.
const codecMask = 0x07

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// RecordSize returns an upper bound of the bytes r takes inside a batch (the
// record's length varint included), assuming worst-case 5-byte offsetDelta
// and 10-byte timestampDelta varints. It is cheap and does not allocate.
func RecordSize(r *Record) int {
	n := bodySize(r, 10, 5)
	return varintLen(int64(n)) + n
}

// bodySize is the size of r's encoding after its length varint, given the
// sizes of its timestampDelta and offsetDelta varints.
func bodySize(r *Record, tsLen, offLen int) int {
	n := 1 + tsLen + offLen + bytesLen(r.Key) + bytesLen(r.Value) + varintLen(int64(len(r.Headers)))
	for i := range r.Headers {
		h := &r.Headers[i]
		n += varintLen(int64(len(h.Key))) + len(h.Key) + bytesLen(h.Value)
	}
	return n
}

// bytesLen is the encoded size of a nullable byte string: its length varint
// (-1 for nil) and its bytes.
func bytesLen(b []byte) int {
	if b == nil {
		return 1
	}
	return varintLen(int64(len(b))) + len(b)
}

// varintLen is the size of v as a zigzag varint.
func varintLen(v int64) int {
	u := uint64(v<<1) ^ uint64(v>>63)
	return (bits.Len64(u|1) + 6) / 7
}

// appendVarint appends v as a zigzag varint (protobuf's sint64 encoding,
// which for int32 values is also Kafka's varint).
func appendVarint(dst []byte, v int64) []byte {
	u := uint64(v<<1) ^ uint64(v>>63)
	for u >= 0x80 {
		dst = append(dst, byte(u)|0x80)
		u >>= 7
	}
	return append(dst, byte(u))
}

// appendBytes appends a nullable byte string: its length varint (-1 for nil)
// and its bytes.
func appendBytes(dst, b []byte) []byte {
	if b == nil {
		return append(dst, 1) // zigzag(-1)
	}
	dst = appendVarint(dst, int64(len(b)))
	return append(dst, b...)
}

// Builder encodes one batch at a time into reused buffers. The zero value is
// ready to use. It is not safe for concurrent use; use one per sender
// goroutine.
type Builder struct {
	// buf is the batch being built: BatchOverhead bytes for the header
	// (written by AppendFinish), then the encoded records. Reused across
	// Reset; AppendFinish hands it over and adopts the caller's buffer.
	buf     []byte
	scratch []byte // compressed records section, reused across Finish
	n       int    // records appended since Reset
	firstTs int64  // timestamp of the first record
	maxTs   int64  // largest timestamp appended
}

// Reset starts a new batch, keeping the buffers for reuse.
func (b *Builder) Reset() {
	b.buf = withHeaderRoom(b.buf)
	b.n = 0
	b.firstTs, b.maxTs = 0, 0
}

// withHeaderRoom empties buf but for the BatchOverhead bytes of header
// room, allocating when buf is too small.
func withHeaderRoom(buf []byte) []byte {
	if cap(buf) < BatchOverhead {
		return make([]byte, BatchOverhead, 4096)
	}
	return buf[:BatchOverhead]
}

// recs is the encoded records section.
func (b *Builder) recs() []byte {
	if len(b.buf) < BatchOverhead {
		return nil
	}
	return b.buf[BatchOverhead:]
}

// Append encodes r as the next record. Its offsetDelta is the number of
// records appended so far; the first record's timestamp becomes the batch's
// firstTimestamp, and later records' timestampDelta may be negative. Append
// copies r's bytes, so r may be reused once it returns.
func (b *Builder) Append(r *Record) {
	if b.n == 0 {
		b.firstTs, b.maxTs = r.TimestampMs, r.TimestampMs
	} else if r.TimestampMs > b.maxTs {
		b.maxTs = r.TimestampMs
	}
	tsDelta := r.TimestampMs - b.firstTs
	offDelta := int64(b.n)
	body := bodySize(r, varintLen(tsDelta), varintLen(offDelta))

	if len(b.buf) < BatchOverhead { // the zero Builder
		b.buf = withHeaderRoom(b.buf)
	}
	dst := appendVarint(b.buf, int64(body))
	dst = append(dst, 0) // attributes
	dst = appendVarint(dst, tsDelta)
	dst = appendVarint(dst, offDelta)
	dst = appendBytes(dst, r.Key)
	dst = appendBytes(dst, r.Value)
	dst = appendVarint(dst, int64(len(r.Headers)))
	for i := range r.Headers {
		h := &r.Headers[i]
		dst = appendVarint(dst, int64(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = appendBytes(dst, h.Value)
	}
	b.buf = dst
	b.n++
}

// Len is how many records were appended since Reset.
func (b *Builder) Len() int { return b.n }

// Size is the uncompressed size in bytes of the records appended since
// Reset. It excludes the batch header: an uncompressed batch finished now
// takes BatchOverhead+Size() bytes.
func (b *Builder) Size() int { return len(b.recs()) }

// errEmpty is returned by Finish for a batch without records, which Kafka
// rejects.
var errEmpty = errors.New("kpush: cannot finish a batch with no records")

// Finish compresses the records section with codec (unless it is None) and
// returns a newly allocated, complete RecordBatch v2: baseOffset 0,
// partitionLeaderEpoch -1, CreateTime timestamps, neither transactional nor
// control, with the given producer ID, epoch and base sequence. Use -1 for
// all three when not idempotent. The Builder keeps its records, so Finish
// may be called again; call Reset to start the next batch.
func (b *Builder) Finish(codec Codec, producerID int64, epoch int16, baseSeq int32) ([]byte, error) {
	if err := b.check(codec); err != nil {
		return nil, err
	}
	records := b.recs()
	if codec != None {
		var err error
		if b.scratch, err = compress(codec, b.scratch[:0], records, 0); err != nil {
			return nil, fmt.Errorf("kpush: compressing batch with %v: %w", codec, err)
		}
		records = b.scratch
	}
	out := make([]byte, BatchOverhead+len(records))
	copy(out[BatchOverhead:], records)
	b.writeHeader(out, codec, producerID, epoch, baseSeq)
	return out, nil
}

// AppendFinish is Finish without copying the records: the batch is built
// in the Builder's own buffer, which it returns with the header written
// in place, taking dst (a recycled batch buffer, or nil) for the next
// batch; the Builder is then empty, as after Reset. With a codec, the
// records are compressed straight into dst behind the header and the
// Builder keeps its records and buffer instead (so Finish may follow a
// compression error). Either way the returned batch belongs to the caller
// and dst must not be used again by it.
func (b *Builder) AppendFinish(dst []byte, codec Codec, producerID int64, epoch int16, baseSeq int32) ([]byte, error) {
	if err := b.check(codec); err != nil {
		return nil, err
	}
	if codec == None {
		out := b.buf
		b.writeHeader(out, codec, producerID, epoch, baseSeq)
		if cap(dst) < len(out) {
			// The next batch is likely as big as this one: one
			// allocation of that size, rather than growing by doubling
			// and copying (the old copy, by another name).
			dst = make([]byte, 0, len(out)+len(out)/8)
		}
		b.buf = dst
		b.Reset()
		return out, nil
	}
	out, err := compress(codec, withHeaderRoom(dst), b.recs(), BatchOverhead)
	if err != nil {
		return nil, fmt.Errorf("kpush: compressing batch with %v: %w", codec, err)
	}
	b.writeHeader(out, codec, producerID, epoch, baseSeq)
	return out, nil
}

// check refuses an empty batch and an unknown codec.
func (b *Builder) check(codec Codec) error {
	if b.n == 0 {
		return errEmpty
	}
	if !codec.valid() {
		return fmt.Errorf("kpush: cannot finish a batch with unknown compression codec %v", codec)
	}
	return nil
}

// writeHeader writes the batch header into out[:BatchOverhead], whose
// records section out[BatchOverhead:] is complete.
func (b *Builder) writeHeader(out []byte, codec Codec, producerID int64, epoch int16, baseSeq int32) {
	clear(out[:BatchOverhead])
	be := binary.BigEndian
	// baseOffset stays 0.
	be.PutUint32(out[offLength:], uint32(len(out)-offLeaderEpoch))
	be.PutUint32(out[offLeaderEpoch:], 0xFFFFFFFF) // -1
	out[offMagic] = 2
	be.PutUint16(out[offAttributes:], uint16(codec))
	be.PutUint32(out[offLastOffsetDelta:], uint32(b.n-1))
	be.PutUint64(out[offFirstTimestamp:], uint64(b.firstTs))
	be.PutUint64(out[offMaxTimestamp:], uint64(b.maxTs))
	be.PutUint32(out[offNumRecords:], uint32(b.n))
	SetProducer(out, producerID, epoch, baseSeq) // also writes the CRC
}

// SetProducer rewrites producerId, producerEpoch and baseSequence of a
// finished batch in place and recomputes its CRC. The producer uses it when
// the producer epoch is bumped and sequences reset (KIP-360). It panics if
// batch is shorter than BatchOverhead.
func SetProducer(batch []byte, producerID int64, epoch int16, baseSeq int32) {
	_ = batch[BatchOverhead-1] // one bounds check
	be := binary.BigEndian
	be.PutUint64(batch[offProducerID:], uint64(producerID))
	be.PutUint16(batch[offProducerEpoch:], uint16(epoch))
	be.PutUint32(batch[offBaseSequence:], uint32(baseSeq))
	be.PutUint32(batch[offCRC:], crc32.Checksum(batch[offAttributes:], crc32c))
}
