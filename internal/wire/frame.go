package wire

// Response frames: reading one, checking its correlation id and decoding
// it. Called by whoever holds the read (conn.go, ownread.go).

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func decode(cl *call, body []byte) (kmsg.Response, error) {
	if len(body) < 4 {
		return nil, io.ErrUnexpectedEOF
	}
	if corr := int32(binary.BigEndian.Uint32(body)); corr != cl.corr {
		return nil, fmt.Errorf("correlation id %d, want %d", corr, cl.corr)
	}
	body = body[4:]
	resp := cl.req.ResponseKind()
	resp.SetVersion(cl.req.GetVersion())
	if resp.IsFlexible() && cl.req.Key() != int16(kmsg.ApiVersions) {
		var err error
		if body, err = skipTags(body); err != nil {
			return nil, err
		}
	}
	if err := resp.ReadFrom(body); err != nil {
		return nil, err
	}
	return resp, nil
}

// maxFrame bounds a response size so a garbage length cannot make us
// allocate gigabytes.
const maxFrame = 256 << 20

func readFrame(br *bufio.Reader, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, err
	}
	n := int32(binary.BigEndian.Uint32(hdr[:]))
	if n < 4 || n > maxFrame {
		return nil, fmt.Errorf("invalid response size %d", n)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(br, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// skipTags skips a KIP-482 tagged-field section.
func skipTags(b []byte) ([]byte, error) {
	n, m := binary.Uvarint(b)
	if m <= 0 {
		return nil, io.ErrUnexpectedEOF
	}
	b = b[m:]
	for ; n > 0; n-- {
		if _, m = binary.Uvarint(b); m <= 0 {
			return nil, io.ErrUnexpectedEOF
		}
		b = b[m:]
		size, m := binary.Uvarint(b)
		if m <= 0 || uint64(len(b)-m) < size {
			return nil, io.ErrUnexpectedEOF
		}
		b = b[m+int(size):]
	}
	return b, nil
}
