package wire

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestFrameProduce_SameBytesAsKmsg: the framing plus the batches written
// by writev are, byte for byte, what kmsg's formatter encodes, at every
// produce version kpush may send (3 to 12, flexible from 9), with null,
// empty and large records, several topics and partitions, a
// transactional ID or none, and any client ID.
func TestFrameProduce_SameBytesAsKmsg(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 300) // a length needing a two-byte uvarint
	txn := "tx"
	for v := int16(3); v <= 12; v++ {
		for _, clientID := range []string{"", "kpush"} {
			for _, tid := range []*string{nil, &txn} {
				req := kmsg.NewPtrProduceRequest()
				req.Version, req.Acks, req.TimeoutMillis, req.TransactionID = v, -1, 30000, tid
				for ti, name := range []string{"a", "topic-b"} {
					rt := kmsg.NewProduceRequestTopic()
					rt.Topic = name
					for pi, recs := range [][]byte{[]byte("batch"), nil, {}, big} {
						rp := kmsg.NewProduceRequestTopicPartition()
						rp.Partition, rp.Records = int32(10*ti+pi), recs
						rt.Partitions = append(rt.Partitions, rp)
					}
					req.Topics = append(req.Topics, rt)
				}
				want := kmsg.NewRequestFormatter(kmsg.FormatterClientID(clientID)).AppendRequest(nil, req, 42)
				frame, cuts := frameProduce([]byte("junk"), nil, clientID, req, 42)
				var got []byte
				for _, b := range produceBuffers(nil, frame[4:], shift(cuts, -4), req) {
					got = append(got, b...)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s: framed\n%x\nkmsg\n%x", fmt.Sprintf("v%d client %q txn %v", v, clientID, tid != nil), got, want)
				}
			}
		}
	}
}

func shift(cuts []int, d int) []int {
	out := make([]int, len(cuts))
	for i, c := range cuts {
		out[i] = c + d
	}
	return out
}
