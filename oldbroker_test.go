package kpush_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestSend_BrokerBefore24: a broker older than Kafka 2.4 serves
// ApiVersions v0–v2 only and answers v3 with a v0-format body carrying
// UNSUPPORTED_VERSION (KIP-511). Every connection (metadata and produce)
// must fall back and records must be delivered; before, no connection
// could be made and records ended at the delivery timeout.
func TestSend_BrokerBefore24(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("old", 2))
	f := c.Fake()
	var fallbacks atomic.Int32
	f.ControlKey(int16(kmsg.ApiVersions), func(req kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		if req.GetVersion() <= 2 {
			return nil, nil, false
		}
		fallbacks.Add(1)
		resp := req.ResponseKind().(*kmsg.ApiVersionsResponse)
		resp.SetVersion(0)
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		k := kmsg.NewApiVersionsResponseApiKey()
		k.ApiKey, k.MaxVersion = int16(kmsg.ApiVersions), 2
		resp.ApiKeys = append(resp.ApiKeys, k)
		return resp, nil, true
	})
	p := newProducer(t, c, kpush.WithDeliveryTimeout(5*time.Second), kpush.WithRequestTimeout(2*time.Second))
	sendAndReadBack(t, c, p, "old", 10)
	if n := fallbacks.Load(); n < 2 {
		t.Errorf("%d ApiVersions fallbacks, want one per connection (metadata and produce)", n)
	}
}
