package batch

import "testing"

// BenchmarkAppendFinish encodes and finishes batches of 100 records with
// 100-byte values, per codec. SetBytes counts uncompressed record bytes.
func BenchmarkAppendFinish(b *testing.B) {
	recs := manyRecords(100, 100)
	for _, codec := range allCodecs {
		b.Run(codec.String(), func(b *testing.B) {
			var bl Builder
			b.ReportAllocs()
			build(b, &bl, recs, codec, -1, -1, -1) // warm buffers and pools
			b.SetBytes(int64(bl.Size()))
			for b.Loop() {
				bl.Reset()
				for i := range recs {
					bl.Append(&recs[i])
				}
				if _, err := bl.Finish(codec, 1, 0, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppend(b *testing.B) {
	recs := manyRecords(100, 100)
	var bl Builder
	b.ReportAllocs()
	for b.Loop() {
		bl.Reset()
		for i := range recs {
			bl.Append(&recs[i])
		}
	}
}

// BenchmarkAppendFinishRecycled is the sink's pattern: 100 records of
// 100 bytes, finished without compression into a recycled batch buffer,
// which comes back once "its request is answered" (here: at once).
func BenchmarkAppendFinishRecycled(b *testing.B) {
	recs := manyRecords(100, 100)
	var bl Builder
	var recycled []byte
	b.ReportAllocs()
	for b.Loop() {
		bl.Reset()
		for i := range recs {
			bl.Append(&recs[i])
		}
		out, err := bl.AppendFinish(recycled, None, 1, 0, 0)
		if err != nil {
			b.Fatal(err)
		}
		recycled = out[:0]
	}
}
