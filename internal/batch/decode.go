package batch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
)

// Decoded is one parsed RecordBatch v2. Record timestamps are absolute
// (firstTimestamp plus each record's delta), and record bytes do not alias
// the input of Decode.
type Decoded struct {
	ProducerID                   int64
	ProducerEpoch                int16
	BaseSequence                 int32
	Codec                        Codec
	FirstTimestamp, MaxTimestamp int64
	LastOffsetDelta              int32
	Records                      []Record
}

// errCorrupt wraps every structural problem Decode finds.
var errCorrupt = errors.New("kpush: corrupt record batch")

// corrupt returns an errCorrupt wrapping a description of the problem.
func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errCorrupt, fmt.Sprintf(format, args...))
}

// Decode parses exactly one RecordBatch v2, checking its length, magic and
// CRC, and decompresses its records. It is meant for tests and tools, not
// the hot path.
func Decode(b []byte) (Decoded, error) {
	var d Decoded
	if len(b) < BatchOverhead {
		return d, corrupt("%d bytes is shorter than the %d-byte header", len(b), BatchOverhead)
	}
	be := binary.BigEndian
	if length := int32(be.Uint32(b[offLength:])); int64(length) != int64(len(b)-offLeaderEpoch) {
		return d, corrupt("batchLength %d, but %d bytes follow it", length, len(b)-offLeaderEpoch)
	}
	if m := int8(b[offMagic]); m != 2 {
		return d, corrupt("magic %d, want 2", m)
	}
	if want, got := be.Uint32(b[offCRC:]), crc32.Checksum(b[offAttributes:], crc32c); want != got {
		return d, corrupt("CRC %#08x, computed %#08x", want, got)
	}
	attrs := be.Uint16(b[offAttributes:])
	d.Codec = Codec(attrs & codecMask)
	if !d.Codec.valid() {
		return d, corrupt("unknown compression codec %d", attrs&codecMask)
	}
	d.LastOffsetDelta = int32(be.Uint32(b[offLastOffsetDelta:]))
	d.FirstTimestamp = int64(be.Uint64(b[offFirstTimestamp:]))
	d.MaxTimestamp = int64(be.Uint64(b[offMaxTimestamp:]))
	d.ProducerID = int64(be.Uint64(b[offProducerID:]))
	d.ProducerEpoch = int16(be.Uint16(b[offProducerEpoch:]))
	d.BaseSequence = int32(be.Uint32(b[offBaseSequence:]))
	n := int32(be.Uint32(b[offNumRecords:]))
	if n < 0 {
		return d, corrupt("negative record count %d", n)
	}

	recs, err := decompress(d.Codec, b[BatchOverhead:])
	if err != nil {
		return d, fmt.Errorf("%w: decompressing %v records: %w", errCorrupt, d.Codec, err)
	}
	// Every record takes at least 7 bytes, so a bogus count cannot make
	// us preallocate much more than the data.
	d.Records = make([]Record, 0, min(int(n), len(recs)/7))
	for i := range n {
		var r Record
		if recs, err = readRecord(recs, &r, d.FirstTimestamp); err != nil {
			return d, fmt.Errorf("%w: record %d: %w", errCorrupt, i, err)
		}
		d.Records = append(d.Records, r)
	}
	if len(recs) > 0 {
		return d, corrupt("%d bytes after the last of %d records", len(recs), n)
	}
	return d, nil
}

// readRecord parses one record from the front of src into r and returns
// the rest of src.
func readRecord(src []byte, r *Record, firstTs int64) ([]byte, error) {
	rd := reader{src: src}
	length := rd.varint32()
	if rd.err == nil && (length < 0 || int(length) > len(rd.src)) {
		return nil, fmt.Errorf("length %d with %d bytes left", length, len(rd.src))
	}
	if rd.err != nil {
		return nil, rd.err
	}
	rest := rd.src[length:]
	rd.src = rd.src[:length]

	rd.byte() // attributes: unused by Kafka
	r.TimestampMs = firstTs + rd.varint()
	rd.varint32() // offsetDelta: the record's position, which we keep implicitly
	r.Key = rd.bytes()
	r.Value = rd.bytes()
	nh := rd.varint32()
	if rd.err == nil && (nh < 0 || int(nh) > len(rd.src)/2) {
		return nil, fmt.Errorf("header count %d with %d bytes left", nh, len(rd.src))
	}
	if nh > 0 {
		r.Headers = make([]Header, nh)
		for i := range r.Headers {
			h := &r.Headers[i]
			k := rd.bytes()
			if k == nil && rd.err == nil {
				return nil, errors.New("null header key")
			}
			h.Key = string(k)
			h.Value = rd.bytes()
		}
	}
	if rd.err != nil {
		return nil, rd.err
	}
	if len(rd.src) > 0 {
		return nil, fmt.Errorf("%d bytes left over in record", len(rd.src))
	}
	return rest, nil
}

// reader consumes Kafka's record encoding from src, remembering the first
// error; once err is set every method returns zero values.
type reader struct {
	src []byte
	err error
}

var errShort = errors.New("record truncated")

func (rd *reader) byte() byte {
	if rd.err != nil {
		return 0
	}
	if len(rd.src) == 0 {
		rd.err = errShort
		return 0
	}
	c := rd.src[0]
	rd.src = rd.src[1:]
	return c
}

func (rd *reader) varint() int64 {
	if rd.err != nil {
		return 0
	}
	v, n := binary.Varint(rd.src)
	if n <= 0 {
		rd.err = errors.New("bad varint")
		return 0
	}
	rd.src = rd.src[n:]
	return v
}

func (rd *reader) varint32() int32 {
	v := rd.varint()
	if v < math.MinInt32 || v > math.MaxInt32 {
		rd.err = fmt.Errorf("varint %d overflows int32", v)
		return 0
	}
	return int32(v)
}

// bytes reads a nullable byte string; length -1 is nil. The result aliases
// src.
func (rd *reader) bytes() []byte {
	n := rd.varint32()
	if rd.err != nil {
		return nil
	}
	switch {
	case n == -1:
		return nil
	case n < -1:
		rd.err = fmt.Errorf("negative length %d", n)
		return nil
	case int(n) > len(rd.src):
		rd.err = errShort
		return nil
	}
	b := rd.src[:n:n]
	rd.src = rd.src[n:]
	return b
}
