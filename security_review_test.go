package kpush_test

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestSASL_ConnectionDropDuringAuthIsRetried: a broker (or the network)
// that drops the connection once in the middle of the SASL exchange —
// a broker restart, a load balancer reset — says nothing about the
// credentials. The records must be delivered, not failed with
// ErrAuthentication.
func TestSASL_ConnectionDropDuringAuthIsRetried(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("drop", 2),
		kafkatest.WithSASL(kafkatest.SASLScramSHA256, testUser, testSecret))
	fake := c.Fake()
	var n atomic.Int32
	fake.ControlKey(int16(kmsg.SASLAuthenticate), func(kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		if n.Add(1) == 3 { // the produce connection's first SaslAuthenticate (metadata took 1 and 2)
			return nil, errors.New("simulated connection reset"), true // kfake closes the connection
		}
		return nil, nil, false
	})
	p := newProducer(t, c, kpush.WithSASL(kpush.SASLScramSHA256(testUser, testSecret)))
	sendAndReadBack(t, c, p, "drop", 20)
	if s := p.Stats(); s.AuthFailures != 0 {
		t.Errorf("AuthFailures = %d (%s); a dropped connection is not an authentication failure", s.AuthFailures, s.LastAuthError)
	}
}

