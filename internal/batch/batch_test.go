package batch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var allCodecs = []Codec{None, Gzip, Snappy, LZ4, Zstd}

// recordCases are the record sets every codec must round-trip.
var recordCases = []struct {
	name string
	recs []Record
}{
	{"single", []Record{{Key: []byte("k"), Value: []byte("v"), TimestampMs: 1700000000000}}},
	{"nil key", []Record{{Value: []byte("v"), TimestampMs: 1}}},
	{"empty key", []Record{{Key: []byte{}, Value: []byte("v"), TimestampMs: 1}}},
	{"nil value", []Record{{Key: []byte("k"), TimestampMs: 1}}},
	{"empty value", []Record{{Key: []byte("k"), Value: []byte{}, TimestampMs: 1}}},
	{"all nil", []Record{{}}},
	{"headers", []Record{{
		Key:   []byte("k"),
		Value: []byte("v"),
		Headers: []Header{
			{Key: "a", Value: []byte("1")},
			{Key: "nil", Value: nil},
			{Key: "empty", Value: []byte{}},
			{Key: "", Value: []byte("empty key")},
		},
		TimestampMs: 1700000000000,
	}}},
	{"negative timestamp delta", []Record{
		{Value: []byte("a"), TimestampMs: 1700000000000},
		{Value: []byte("b"), TimestampMs: 1600000000000},
		{Value: []byte("c"), TimestampMs: 1800000000000},
		{Value: []byte("d"), TimestampMs: 1700000000000},
	}},
	{"extreme timestamps", []Record{
		{Value: []byte("a"), TimestampMs: math.MaxInt64},
		{Value: []byte("b"), TimestampMs: math.MinInt64},
		{Value: []byte("c"), TimestampMs: -1},
	}},
	{"many records", manyRecords(1000, 100)},
	{"large values", manyRecords(5, 200<<10)},
}

// manyRecords returns n records with valueLen-byte, somewhat compressible
// values, keys every other record and a header every third.
func manyRecords(n, valueLen int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		r := &recs[i]
		r.TimestampMs = 1700000000000 + int64(i%7)*13 - 40
		if i%2 == 0 {
			r.Key = fmt.Appendf(nil, "key-%d", i)
		}
		r.Value = bytes.Repeat(fmt.Appendf(nil, "value %d;", i), valueLen/8+1)[:valueLen]
		if i%3 == 0 {
			r.Headers = []Header{{Key: "i", Value: fmt.Appendf(nil, "%d", i)}}
		}
	}
	return recs
}

// normalized returns recs as Decode returns them: no empty header slices.
func normalized(recs []Record) []Record {
	out := make([]Record, len(recs))
	for i, r := range recs {
		if len(r.Headers) == 0 {
			r.Headers = nil
		}
		out[i] = r
	}
	return out
}

// build encodes recs into one finished batch.
func build(t testing.TB, b *Builder, recs []Record, codec Codec, pid int64, epoch int16, seq int32) []byte {
	t.Helper()
	b.Reset()
	for i := range recs {
		b.Append(&recs[i])
	}
	out, err := b.Finish(codec, pid, epoch, seq)
	if err != nil {
		t.Fatalf("Finish(%v): %v", codec, err)
	}
	return out
}

func TestCodec_StringAndParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Codec
		wantErr bool
	}{
		{"none", None, false},
		{"gzip", Gzip, false},
		{"Snappy", Snappy, false},
		{"LZ4", LZ4, false},
		{"zStd", Zstd, false},
		{"", None, true},
		{"brotli", None, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseCodec(tt.in)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.in)) || !strings.Contains(err.Error(), "zstd") {
					t.Fatalf("ParseCodec(%q) error = %v, want one naming the value and the valid codecs", tt.in, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseCodec(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if s := got.String(); s != strings.ToLower(tt.in) {
				t.Fatalf("%v.String() = %q, want %q", got, s, strings.ToLower(tt.in))
			}
		})
	}
	if s := Codec(9).String(); s != "Codec(9)" {
		t.Fatalf("Codec(9).String() = %q", s)
	}
}

func TestRecordSize_IsUpperBound(t *testing.T) {
	tests := []struct {
		name string
		r    Record
	}{
		{"empty", Record{}},
		{"small", Record{Key: []byte("k"), Value: []byte("v")}},
		{"headers", recordCases[6].recs[0]},
		{"varint boundary", Record{Value: make([]byte, 63)}},
		{"large", Record{Key: make([]byte, 200), Value: make([]byte, 1<<20), Headers: []Header{{Key: strings.Repeat("h", 130), Value: make([]byte, 20000)}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, ts := range []int64{0, 1, -1, math.MaxInt64, math.MinInt64} {
				var b Builder
				b.Append(&Record{TimestampMs: 0})
				r := tt.r
				r.TimestampMs = ts
				before := b.Size()
				b.Append(&r)
				got, bound := b.Size()-before, RecordSize(&r)
				if got > bound {
					t.Fatalf("ts %d: record took %d bytes, RecordSize = %d", ts, got, bound)
				}
				if bound-got > 15 { // only the two deltas are estimated
					t.Fatalf("ts %d: RecordSize = %d is loose; record took %d", ts, bound, got)
				}
			}
			if r := tt.r; len(r.Headers) == 0 && RecordSize(&r) > MaxRecordOverhead+len(r.Key)+len(r.Value) {
				t.Fatalf("RecordSize %d exceeds MaxRecordOverhead bound", RecordSize(&r))
			}
			r := tt.r
			if n := testing.AllocsPerRun(100, func() { RecordSize(&r) }); n != 0 {
				t.Fatalf("RecordSize allocates %v times", n)
			}
		})
	}
}

func TestFinish_RoundTrip(t *testing.T) {
	var b Builder // shared on purpose: buffers are reused across cases
	for _, codec := range allCodecs {
		for _, tc := range recordCases {
			t.Run(codec.String()+"/"+tc.name, func(t *testing.T) {
				raw := build(t, &b, tc.recs, codec, 42, 3, 17)
				if b.Len() != len(tc.recs) {
					t.Fatalf("Len = %d, want %d", b.Len(), len(tc.recs))
				}
				d, err := Decode(raw)
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if d.Codec != codec || d.ProducerID != 42 || d.ProducerEpoch != 3 || d.BaseSequence != 17 {
					t.Fatalf("header = %v/%d/%d/%d, want %v/42/3/17", d.Codec, d.ProducerID, d.ProducerEpoch, d.BaseSequence, codec)
				}
				if d.LastOffsetDelta != int32(len(tc.recs)-1) {
					t.Fatalf("LastOffsetDelta = %d, want %d", d.LastOffsetDelta, len(tc.recs)-1)
				}
				first, maxTs := tc.recs[0].TimestampMs, int64(math.MinInt64)
				for _, r := range tc.recs {
					maxTs = max(maxTs, r.TimestampMs)
				}
				if d.FirstTimestamp != first || d.MaxTimestamp != maxTs {
					t.Fatalf("timestamps = %d/%d, want %d/%d", d.FirstTimestamp, d.MaxTimestamp, first, maxTs)
				}
				if want := normalized(tc.recs); !reflect.DeepEqual(d.Records, want) {
					t.Fatalf("records differ\n got %.300v\nwant %.300v", d.Records, want)
				}
				if codec == None && len(raw) != BatchOverhead+b.Size() {
					t.Fatalf("uncompressed batch is %d bytes, want BatchOverhead+Size = %d", len(raw), BatchOverhead+b.Size())
				}
				checkWithKmsg(t, raw, tc.recs, codec, 42, 3, 17)
			})
		}
	}
}

// checkWithKmsg parses raw with franz-go's kmsg (and its decompressor) and
// checks every field against what we meant to encode.
func checkWithKmsg(t *testing.T, raw []byte, recs []Record, codec Codec, pid int64, epoch int16, seq int32) {
	t.Helper()
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(raw); err != nil {
		t.Fatalf("kmsg ReadFrom: %v", err)
	}
	maxTs := recs[0].TimestampMs
	for _, r := range recs {
		maxTs = max(maxTs, r.TimestampMs)
	}
	want := kmsg.RecordBatch{
		FirstOffset:          0,
		Length:               int32(len(raw) - 12),
		PartitionLeaderEpoch: -1,
		Magic:                2,
		CRC:                  int32(crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli))),
		Attributes:           int16(codec),
		LastOffsetDelta:      int32(len(recs) - 1),
		FirstTimestamp:       recs[0].TimestampMs,
		MaxTimestamp:         maxTs,
		ProducerID:           pid,
		ProducerEpoch:        epoch,
		FirstSequence:        seq,
		NumRecords:           int32(len(recs)),
		Records:              rb.Records,
	}
	if !reflect.DeepEqual(rb, want) {
		rb.Records, want.Records = nil, nil
		t.Fatalf("kmsg batch\n got %+v\nwant %+v", rb, want)
	}
	data, err := kgo.DefaultDecompressor().Decompress(rb.Records, kgo.CompressionCodecType(codec))
	if err != nil {
		t.Fatalf("franz-go decompress %v: %v", codec, err)
	}
	got := kmsgRecords(t, data, len(recs), rb.FirstTimestamp)
	if !reflect.DeepEqual(got, normalized(recs)) {
		t.Fatalf("kmsg records differ\n got %.300v\nwant %.300v", got, recs)
	}
}

// kmsgRecords decodes n records with kmsg.Record, checking offset deltas
// and lengths, and converts them to Records.
func kmsgRecords(t *testing.T, data []byte, n int, firstTs int64) []Record {
	t.Helper()
	out := make([]Record, 0, n)
	for i := range n {
		var kr kmsg.Record
		if err := kr.ReadFrom(data); err != nil {
			t.Fatalf("kmsg record %d: %v", i, err)
		}
		if kr.OffsetDelta != int32(i) || kr.Attributes != 0 {
			t.Fatalf("kmsg record %d: offsetDelta %d attributes %d", i, kr.OffsetDelta, kr.Attributes)
		}
		_, w := binary.Varint(data)
		if int(kr.Length) != len(kr.AppendTo(nil))-w {
			t.Fatalf("kmsg record %d: length %d does not match its body", i, kr.Length)
		}
		data = data[w+int(kr.Length):]
		r := Record{Key: kr.Key, Value: kr.Value, TimestampMs: firstTs + kr.TimestampDelta64}
		for _, h := range kr.Headers {
			r.Headers = append(r.Headers, Header{Key: h.Key, Value: h.Value})
		}
		out = append(out, r)
	}
	if len(data) != 0 {
		t.Fatalf("%d bytes after %d kmsg records", len(data), n)
	}
	return out
}

func TestSetProducer_RewritesAndFixesCRC(t *testing.T) {
	recs := recordCases[7].recs
	for _, codec := range allCodecs {
		t.Run(codec.String(), func(t *testing.T) {
			var b Builder
			raw := build(t, &b, recs, codec, -1, -1, -1)
			SetProducer(raw, 1234567890123, 7, 99)
			d, err := Decode(raw)
			if err != nil {
				t.Fatalf("Decode after SetProducer: %v", err)
			}
			if d.ProducerID != 1234567890123 || d.ProducerEpoch != 7 || d.BaseSequence != 99 {
				t.Fatalf("Decode = %d/%d/%d, want 1234567890123/7/99", d.ProducerID, d.ProducerEpoch, d.BaseSequence)
			}
			checkWithKmsg(t, raw, recs, codec, 1234567890123, 7, 99)
			if again := build(t, &b, recs, codec, 1234567890123, 7, 99); !bytes.Equal(again, raw) {
				t.Fatal("SetProducer result differs from a batch finished with the same producer")
			}
		})
	}
}

// withRecords returns a copy of batch whose records section is records,
// with its length and CRC fixed.
func withRecords(batch, records []byte) []byte {
	out := append(bytes.Clone(batch[:BatchOverhead]), records...)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32c))
	return out
}

// appendXerial appends src as xerial-framed snappy in 32 KiB blocks, as the
// Java producer's SnappyOutputStream writes it.
func appendXerial(dst, src []byte) []byte {
	dst = append(dst, xerialHeader...)
	for len(src) > 0 {
		n := min(len(src), 32<<10)
		block := s2.EncodeSnappy(nil, src[:n])
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(block)))
		dst = append(dst, block...)
		src = src[n:]
	}
	return dst
}

func TestDecode_XerialSnappy(t *testing.T) {
	recs := manyRecords(2000, 100) // over 32 KiB: several xerial blocks
	var b Builder
	plain := build(t, &b, recs, None, -1, -1, -1)
	raw := withRecords(plain, appendXerial(nil, plain[BatchOverhead:]))
	binary.BigEndian.PutUint16(raw[21:], uint16(Snappy))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32c))
	d, err := Decode(raw)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if !reflect.DeepEqual(d.Records, normalized(recs)) {
		t.Fatal("xerial snappy records differ")
	}
	checkWithKmsg(t, raw, recs, Snappy, -1, -1, -1)
}

func TestDecode_RejectsCorruptBatches(t *testing.T) {
	var b Builder
	good := build(t, &b, recordCases[6].recs, None, -1, -1, -1)
	gz := build(t, &b, recordCases[6].recs, Gzip, -1, -1, -1)
	mutate := func(src []byte, fn func([]byte) []byte, fixCRC bool) []byte {
		out := fn(bytes.Clone(src))
		if fixCRC && len(out) >= BatchOverhead {
			binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32c))
		}
		return out
	}
	tests := []struct {
		name  string
		batch []byte
	}{
		{"empty", nil},
		{"short header", good[:BatchOverhead-1]},
		{"truncated", good[:len(good)-1]},
		{"trailing byte", append(bytes.Clone(good), 0)},
		{"bad crc", mutate(good, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, false)},
		{"bad magic", mutate(good, func(b []byte) []byte { b[16] = 1; return b }, false)},
		{"unknown codec", mutate(good, func(b []byte) []byte { b[22] = 5; return b }, true)},
		{"count too high", mutate(good, func(b []byte) []byte { b[60]++; return b }, true)},
		{"count too low", mutate(good, func(b []byte) []byte { b[60] = 0; return b }, true)},
		{"negative count", mutate(good, func(b []byte) []byte { b[57] = 0x80; return b }, true)},
		{"bad record length", mutate(good, func(b []byte) []byte { b[61] = 0x7e; return b }, true)},
		{"garbage gzip", withRecords(gz, []byte("not gzip at all"))},
		{"records not matching codec", mutate(good, func(b []byte) []byte { b[22] = byte(Zstd); return b }, true)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode(tt.batch); !errors.Is(err, errCorrupt) {
				t.Fatalf("Decode error = %v, want errCorrupt", err)
			}
		})
	}
}

func TestFinish_Errors(t *testing.T) {
	var b Builder
	if _, err := b.Finish(None, -1, -1, -1); err == nil {
		t.Fatal("Finish on an empty batch succeeded")
	}
	b.Append(&Record{Value: []byte("v")})
	if _, err := b.Finish(Codec(5), -1, -1, -1); err == nil || !strings.Contains(err.Error(), "Codec(5)") {
		t.Fatalf("Finish with an unknown codec: error = %v", err)
	}
	b.Reset()
	if b.Len() != 0 || b.Size() != 0 {
		t.Fatalf("after Reset Len, Size = %d, %d", b.Len(), b.Size())
	}
}

func TestAppend_DoesNotAllocate(t *testing.T) {
	recs := manyRecords(100, 100)
	var b Builder
	for range 2 { // grow the buffer
		build(t, &b, recs, Zstd, -1, -1, -1)
	}
	allocs := testing.AllocsPerRun(50, func() {
		b.Reset()
		for i := range recs {
			b.Append(&recs[i])
		}
	})
	if allocs != 0 {
		t.Fatalf("Reset+Append of 100 records allocates %v times, want 0", allocs)
	}
}
