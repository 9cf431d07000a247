package realfaults

import (
	"testing"
	"time"

	"github.com/kpush/kpush"
)

// TestRealLimits_SocketRequestMaxBytes produces 60 kB records in large
// pipelined batches to four partitions led by one broker whose
// socket.request.max.bytes is 1 MiB: each batch fits the default
// WithMaxBatchBytes (1 MiB) and the topic's max.message.bytes (2 MiB), but
// a request carrying several of them does not fit the broker's request
// limit. A broker refuses such a request by closing the connection,
// without a response, so the producer must keep its requests under the
// limit; every record must still be acknowledged.
//
// The retries counted show the broker refusing requests on the way.
func TestRealLimits_SocketRequestMaxBytes(t *testing.T) {
	e := sharedEdgeCluster(t)
	two := "2097152"
	runScenario(t, e, &scenario{
		parts: 4, keys: 4, perKey: 120, window: 40, value: 60_000, post: 4,
		configs:  map[string]*string{"max.message.bytes": &two},
		bufLimit: 16 << 20,
		minAcked: 1,
		check:    func(err error) error { return err },
		opts:     []kpush.Option{kpush.WithLinger(50 * time.Millisecond), kpush.WithDeliveryTimeout(20 * time.Second)},
	})
}
