package kpush_test

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestSASL_RepeatedClosesDuringAuthAreRetried: a broker that closes the
// connection in the middle of the SASL exchange on several connections in
// a row (a rolling restart: each broker goes down as kpush reconnects)
// has said nothing about the credentials. Real brokers answer bad
// credentials with SASL_AUTHENTICATION_FAILED (KIP-152); only that is an
// authentication failure. Before, two closes in a row failed the buffered
// records with ErrAuthentication.
func TestSASL_RepeatedClosesDuringAuthAreRetried(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("restart", 2),
		kafkatest.WithSASL(kafkatest.SASLScramSHA256, testUser, testSecret))
	fake := c.Fake()
	var n atomic.Int32
	fake.ControlKey(int16(kmsg.SASLAuthenticate), func(kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		// The metadata connection takes the first two; the next three
		// connections are cut at their first SaslAuthenticate.
		if i := n.Add(1); i == 3 || i == 4 || i == 5 {
			return nil, errors.New("simulated broker restart"), true // kfake closes the connection
		}
		return nil, nil, false
	})
	p := newProducer(t, c, kpush.WithSASL(kpush.SASLScramSHA256(testUser, testSecret)))
	sendAndReadBack(t, c, p, "restart", 20)
	if s := p.Stats(); s.AuthFailures != 0 {
		t.Errorf("AuthFailures = %d (%s); closed connections are not authentication failures", s.AuthFailures, s.LastAuthError)
	}
	if got := n.Load(); got < 6 {
		t.Errorf("%d SaslAuthenticate requests; the three cut connections were not all tried", got)
	}
}
