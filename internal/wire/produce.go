package wire

// Produce requests written without copying their record batches.
//
// kmsg encodes a request into one buffer, so every record batch (nearly
// all of a produce request's bytes) was copied once more into the
// connection's write buffer (memmove in kmsg.appendNullableBytes: ~5% of
// kpush's async CPU). frameProduce encodes everything but the batches, as
// kmsg would, and the connection writes the framing and the batches with
// one writev (net.Buffers). The bytes on the wire are identical
// (TestFrameProduce_SameBytesAsKmsg).
//
// Ownership: the framing buffer and the iovec list are the connection's
// (Conn.wbuf, Conn.iov), used with Conn.wmu held; the batches belong to
// the caller, which keeps them unchanged until the request is answered.

import (
	"encoding/binary"
	"net"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// frameProduce appends req (its version set, at most 12: later versions
// name topics by ID) framed as kmsg.RequestFormatter.AppendRequest would,
// size prefix included, but with each partition's Records left out: cuts
// holds, per partition in order, the offset in frame where its Records
// go. The size prefix counts the records.
func frameProduce(frame []byte, cuts []int, clientID string, req *kmsg.ProduceRequest, corr int32) ([]byte, []int) {
	v := req.Version
	flex := v >= 9
	be := binary.BigEndian
	start := len(frame)
	frame = append(frame, 0, 0, 0, 0) // size, written last
	frame = be.AppendUint16(frame, uint16(req.Key()))
	frame = be.AppendUint16(frame, uint16(v))
	frame = be.AppendUint32(frame, uint32(corr))
	// The header's client ID is never compact (kmsg: old brokers parse
	// the header before they know the version).
	frame = be.AppendUint16(frame, uint16(len(clientID)))
	frame = append(frame, clientID...)
	if flex {
		frame = append(frame, 0) // header tags
	}
	if v >= 3 {
		frame = appendNullableString(frame, req.TransactionID, flex)
	}
	frame = be.AppendUint16(frame, uint16(req.Acks))
	frame = be.AppendUint32(frame, uint32(req.TimeoutMillis))
	frame = appendArrayLen(frame, len(req.Topics), flex)
	records := 0
	for i := range req.Topics {
		t := &req.Topics[i]
		frame = appendString(frame, t.Topic, flex)
		frame = appendArrayLen(frame, len(t.Partitions), flex)
		for j := range t.Partitions {
			p := &t.Partitions[j]
			frame = be.AppendUint32(frame, uint32(p.Partition))
			frame = appendBytesLen(frame, p.Records, flex)
			cuts = append(cuts, len(frame))
			records += len(p.Records)
			if flex {
				frame = append(frame, 0) // partition tags
			}
		}
		if flex {
			frame = append(frame, 0) // topic tags
		}
	}
	if flex {
		frame = append(frame, 0) // request tags
	}
	be.PutUint32(frame[start:], uint32(len(frame)-start-4+records))
	return frame, cuts
}

// produceBuffers lists what to write for a request framed by frameProduce:
// the framing between the cuts and each partition's Records.
func produceBuffers(iov net.Buffers, frame []byte, cuts []int, req *kmsg.ProduceRequest) net.Buffers {
	at, k := 0, 0
	for i := range req.Topics {
		for _, p := range req.Topics[i].Partitions {
			iov = append(iov, frame[at:cuts[k]])
			if len(p.Records) > 0 {
				iov = append(iov, p.Records)
			}
			at = cuts[k]
			k++
		}
	}
	return append(iov, frame[at:])
}

func appendUvarint(dst []byte, u uint64) []byte { return binary.AppendUvarint(dst, u) }

func appendArrayLen(dst []byte, n int, flex bool) []byte {
	if flex {
		return appendUvarint(dst, uint64(n)+1)
	}
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

func appendString(dst []byte, s string, flex bool) []byte {
	if flex {
		dst = appendUvarint(dst, uint64(len(s))+1)
	} else {
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	}
	return append(dst, s...)
}

func appendNullableString(dst []byte, s *string, flex bool) []byte {
	if s == nil {
		if flex {
			return append(dst, 0)
		}
		return binary.BigEndian.AppendUint16(dst, 0xFFFF)
	}
	return appendString(dst, *s, flex)
}

// appendBytesLen appends the length prefix of a nullable byte string.
func appendBytesLen(dst, b []byte, flex bool) []byte {
	switch {
	case flex && b == nil:
		return append(dst, 0)
	case flex:
		return appendUvarint(dst, uint64(len(b))+1)
	case b == nil:
		return binary.BigEndian.AppendUint32(dst, 0xFFFFFFFF)
	default:
		return binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	}
}
