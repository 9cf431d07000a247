package batch

import (
	"bytes"
	"math"
	"reflect"
	"testing"
)

// FuzzRoundTrip builds records and a codec from the fuzz input, finishes a
// batch and checks that Decode returns the records unchanged.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{}, uint8(0), int64(0))
	f.Add([]byte("\x00\x03key\x05value"), uint8(1), int64(1700000000000))
	f.Add([]byte("\x03\x00\x00\x13\x01h\x00\x02ab\x80\x01x"), uint8(2), int64(-5))
	f.Add(bytes.Repeat([]byte("\x0c\x04abcd\x04efgh\x01k\x01v\x41"), 40), uint8(3), int64(math.MaxInt64))
	f.Add([]byte("\xff\xff\xff\xff\x10\x10\x10"), uint8(4), int64(math.MinInt64))
	f.Fuzz(func(t *testing.T, data []byte, codecByte uint8, ts int64) {
		codec := allCodecs[int(codecByte)%len(allCodecs)]
		recs := fuzzRecords(data, ts)
		var b Builder
		for i := range recs {
			b.Append(&recs[i])
		}
		out, err := b.Finish(codec, int64(ts), int16(ts), int32(ts))
		if err != nil {
			t.Fatalf("Finish: %v", err)
		}
		d, err := Decode(out)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if !reflect.DeepEqual(d.Records, normalized(recs)) {
			t.Fatalf("records differ\n got %v\nwant %v", d.Records, recs)
		}
		if d.ProducerID != ts || d.ProducerEpoch != int16(ts) || d.BaseSequence != int32(ts) || d.Codec != codec {
			t.Fatalf("header differs: %+v", d)
		}
	})
}

// fuzzRecords turns data into at least one record. Per record, a flags byte
// says which of key and value are nil, how many headers follow (0-3) and
// how far the timestamp moves; then each field takes a length byte and that
// many bytes, as far as data lasts.
func fuzzRecords(data []byte, ts int64) []Record {
	take := func() []byte {
		if len(data) == 0 {
			return []byte{}
		}
		n := min(int(data[0]), len(data)-1)
		out := data[1 : 1+n : 1+n]
		data = data[1+n:]
		return out
	}
	var recs []Record
	for len(recs) == 0 || len(data) > 0 {
		var flags byte
		if len(data) > 0 {
			flags, data = data[0], data[1:]
		}
		r := Record{TimestampMs: ts + int64(int8(flags))*1000}
		if r.Key = take(); flags&1 != 0 {
			r.Key = nil
		}
		if r.Value = take(); flags&2 != 0 {
			r.Value = nil
		}
		for range flags >> 2 & 3 {
			h := Header{Key: string(take()), Value: take()}
			if flags&0x40 != 0 {
				h.Value = nil
			}
			r.Headers = append(r.Headers, h)
		}
		recs = append(recs, r)
	}
	return recs
}
