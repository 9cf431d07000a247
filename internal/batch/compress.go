package batch

// Compression and decompression of a batch's records section.
//
// Concurrency: every function here is safe for concurrent use. gzip and lz4
// writers and readers are pooled; zstd uses one process-wide encoder and
// decoder, whose EncodeAll and DecodeAll are safe for concurrent use.
//
// Snappy: the Java producer writes xerial-framed snappy (a 16-byte header,
// then blocks of a big-endian length and a raw snappy block), but the broker
// reads batches with snappy-java's SnappyInputStream, which treats input
// without the xerial magic as one raw snappy block. franz-go and sarama
// produce raw blocks, so we do too: it is one call and no framing. Decoding
// accepts both forms, as every Kafka consumer must.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// maxDecompressed bounds a decompressed records section, so that a corrupt
// or hostile batch cannot make Decode allocate without limit.
const maxDecompressed = 256 << 20

var (
	gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}
	lz4Writers  = sync.Pool{New: func() any { return lz4.NewWriter(nil) }}
	bufWriters  = sync.Pool{New: func() any { return new(sliceWriter) }}

	// zstdEncoder uses a 64 KiB window like franz-go: a batch is rarely
	// much larger, and each of the encoder's internal encoders (one per
	// CPU) holds a window-sized history.
	zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
		enc, err := zstd.NewWriter(nil,
			zstd.WithWindowSize(64<<10),
			zstd.WithEncoderLevel(zstd.SpeedDefault),
		)
		if err != nil {
			panic("batch: creating zstd encoder: " + err.Error()) // static options
		}
		return enc
	})
	zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
		dec, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(maxDecompressed),
		)
		if err != nil {
			panic("batch: creating zstd decoder: " + err.Error()) // static options
		}
		return dec
	})
)

// sliceWriter is an io.Writer appending to a slice. Unlike bytes.Buffer it
// lets us hand the slice back to the Builder without copying.
type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// compress appends src compressed with codec, which is not None, to
// dst[:keep], reusing dst's storage: keep bytes in front (a batch header's
// room) stay as they are.
func compress(codec Codec, dst, src []byte, keep int) ([]byte, error) {
	dst = dst[:keep]
	switch codec {
	case Gzip:
		gz := gzipWriters.Get().(*gzip.Writer)
		defer gzipWriters.Put(gz)
		return compressStream(gz, dst, src)
	case LZ4:
		lz := lz4Writers.Get().(*lz4.Writer)
		defer lz4Writers.Put(lz)
		return compressStream(lz, dst, src)
	case Snappy:
		n := s2.MaxEncodedLen(len(src))
		if n < 0 {
			return nil, errors.New("input too large for snappy")
		}
		if cap(dst) < keep+n {
			dst = append(make([]byte, 0, keep+n), dst...)
		}
		enc := s2.EncodeSnappy(dst[keep:keep+n], src)
		return dst[:keep+len(enc)], nil
	case Zstd:
		return zstdEncoder().EncodeAll(src, dst), nil
	}
	return nil, fmt.Errorf("unknown codec %v", codec)
}

// streamWriter is what the gzip and lz4 writers have in common.
type streamWriter interface {
	io.WriteCloser
	Reset(io.Writer)
}

// compressStream compresses src with w, appending to dst. It leaves w
// pointing at nothing, so a pooled writer does not pin dst.
func compressStream(w streamWriter, dst, src []byte) ([]byte, error) {
	sw := bufWriters.Get().(*sliceWriter)
	sw.b = dst
	w.Reset(sw)
	_, err := w.Write(src)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	w.Reset(nil)
	dst, sw.b = sw.b, nil
	bufWriters.Put(sw)
	if err != nil {
		return nil, err
	}
	return dst, nil
}

// errTooLarge is returned when records would decompress beyond
// maxDecompressed.
var errTooLarge = fmt.Errorf("decompressed records exceed %d bytes", maxDecompressed)

// decompress returns src decompressed with codec, in a new slice.
func decompress(codec Codec, src []byte) ([]byte, error) {
	switch codec {
	case None:
		return bytes.Clone(src), nil
	case Gzip:
		zr, err := gzip.NewReader(bytes.NewReader(src))
		if err != nil {
			return nil, err
		}
		return readBounded(zr)
	case LZ4:
		return readBounded(lz4.NewReader(bytes.NewReader(src)))
	case Snappy:
		if len(src) > len(xerialHeader) && bytes.HasPrefix(src, xerialMagic) {
			return xerialDecode(src[len(xerialHeader):])
		}
		return snappyBlock(nil, src)
	case Zstd:
		out, err := zstdDecoder().DecodeAll(src, nil)
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
			return nil, errTooLarge
		}
		return out, err
	}
	return nil, fmt.Errorf("unknown codec %v", codec)
}

// readBounded reads r to its end, failing beyond maxDecompressed bytes.
func readBounded(r io.Reader) ([]byte, error) {
	out, err := io.ReadAll(io.LimitReader(r, maxDecompressed+1))
	if err != nil {
		return nil, err
	}
	if len(out) > maxDecompressed {
		return nil, errTooLarge
	}
	return out, nil
}

// snappyBlock appends the decoded raw snappy block src to dst.
func snappyBlock(dst, src []byte) ([]byte, error) {
	n, err := s2.DecodedLen(src)
	if err != nil {
		return nil, err
	}
	if n > maxDecompressed-len(dst) {
		return nil, errTooLarge
	}
	at := len(dst)
	dst = append(dst, make([]byte, n)...)
	if _, err := s2.Decode(dst[at:], src); err != nil {
		return nil, err
	}
	return dst, nil
}

// xerialMagic starts a xerial-framed snappy stream; xerialHeader adds the
// version and minimum compatible version, both 1.
var (
	xerialMagic  = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}
	xerialHeader = append(bytes.Clone(xerialMagic), 0, 0, 0, 1, 0, 0, 0, 1)
)

// errXerial reports malformed xerial snappy framing.
var errXerial = errors.New("malformed xerial snappy framing")

// xerialDecode decodes the blocks of a xerial-framed snappy stream, src
// being what follows its 16-byte header.
func xerialDecode(src []byte) ([]byte, error) {
	var out []byte
	for len(src) > 0 {
		if len(src) < 4 {
			return nil, errXerial
		}
		n := binary.BigEndian.Uint32(src)
		src = src[4:]
		if uint64(n) > uint64(len(src)) {
			return nil, errXerial
		}
		var err error
		if out, err = snappyBlock(out, src[:n]); err != nil {
			return nil, err
		}
		src = src[n:]
	}
	return out, nil
}
