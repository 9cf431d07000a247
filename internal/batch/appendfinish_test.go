package batch

import (
	"bytes"
	"testing"
	"unsafe"
)

// TestAppendFinish_InPlace: without compression, the batch AppendFinish
// returns is the buffer Append encoded the records into, with the header
// written in front, so a record's bytes are copied once (issue 15: the
// header shift was a second full copy of every batch).
func TestAppendFinish_InPlace(t *testing.T) {
	var b Builder
	recs := manyRecords(50, 100)
	for i := range recs {
		b.Append(&recs[i])
	}
	encoded := unsafe.SliceData(b.buf)
	out, err := b.AppendFinish(make([]byte, 0, 8192), None, 7, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if unsafe.SliceData(out) != encoded {
		t.Fatal("AppendFinish copied the records into another buffer instead of writing the header in front of them")
	}
	if b.Len() != 0 || b.Size() != 0 {
		t.Fatalf("after AppendFinish Len, Size = %d, %d, want an empty Builder", b.Len(), b.Size())
	}
}

// TestAppendFinish_SameBytesAsFinish: for every codec, AppendFinish
// (recycled buffers, in place or compressed behind the header) produces
// the bytes Finish does, and a batch handed out stays intact while the
// Builder builds the next ones in the buffers it was given.
func TestAppendFinish_SameBytesAsFinish(t *testing.T) {
	for _, codec := range allCodecs {
		t.Run(codec.String(), func(t *testing.T) {
			var b Builder
			var kept, want [][]byte
			var recycled []byte
			for round := range 6 {
				recs := manyRecords(20+round*7, 10+round*30)
				b.Reset()
				for i := range recs {
					b.Append(&recs[i])
				}
				w, err := b.Finish(codec, 42, 3, int32(round))
				if err != nil {
					t.Fatal(err)
				}
				out, err := b.AppendFinish(recycled, codec, 42, 3, int32(round))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out, w) {
					t.Fatalf("round %d: AppendFinish and Finish differ (%d and %d bytes)", round, len(out), len(w))
				}
				if _, err := Decode(out); err != nil {
					t.Fatalf("round %d: Decode: %v", round, err)
				}
				kept, want = append(kept, out), append(want, w)
				// Every other round recycles the batch of two rounds
				// ago, as the sink does once its request is answered.
				recycled = nil
				if round >= 2 && round%2 == 0 {
					recycled, kept[round-2] = kept[round-2][:0], nil
				}
			}
			for i := range kept {
				if kept[i] != nil && !bytes.Equal(kept[i], want[i]) {
					t.Fatalf("batch %d changed after later batches were built", i)
				}
			}
		})
	}
}

// TestAppendFinish_ZeroBuilder: a zero Builder given nil buffers works.
func TestAppendFinish_ZeroBuilder(t *testing.T) {
	for _, codec := range allCodecs {
		var b Builder
		r := Record{Key: []byte("k"), Value: []byte("v"), TimestampMs: 5}
		b.Append(&r)
		out, err := b.AppendFinish(nil, codec, -1, -1, -1)
		if err != nil {
			t.Fatalf("%v: %v", codec, err)
		}
		d, err := Decode(out)
		if err != nil || len(d.Records) != 1 || string(d.Records[0].Value) != "v" {
			t.Fatalf("%v: Decode = %+v, %v", codec, d, err)
		}
	}
}
