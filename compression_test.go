package kpush

import (
	"testing"

	"github.com/kpush/kpush/internal/batch"
)

// The public codec constants are written as literals (so go doc shows
// numbers, not internal names); they must stay equal to the encoder's ids.
func TestCompression_ValuesMatchEncoder(t *testing.T) {
	for _, c := range []struct {
		pub   Compression
		codec batch.Codec
	}{
		{NoCompression, batch.None},
		{Gzip, batch.Gzip},
		{Snappy, batch.Snappy},
		{LZ4, batch.LZ4},
		{Zstd, batch.Zstd},
	} {
		if batch.Codec(c.pub) != c.codec {
			t.Errorf("%v = %d, encoder id %d", c.pub, c.pub, c.codec)
		}
		if c.pub.String() != c.codec.String() {
			t.Errorf("String %q, encoder %q", c.pub.String(), c.codec.String())
		}
	}
}
