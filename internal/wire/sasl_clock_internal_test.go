package wire

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/kpush/kpush/internal/clock"
)

// TestAuthenticate_ReauthDeadlineIsMonotonic: the renewal time of a SASL
// session is on the monotonic clock, like every other deadline in kpush,
// so a wall-clock step (NTP, a resumed VM) cannot push the renewal past
// the session's end (the broker then closes the connection and in-flight
// requests end with an unknown outcome) nor make it fire at once.
func TestAuthenticate_ReauthDeadlineIsMonotonic(t *testing.T) {
	cl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("PLAIN", "u", "p"),
		kfake.BrokerConfigs(map[string]string{"connections.max.reauth.ms": "10000"}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c, err := Dial(context.Background(), cl.ListenAddrs()[0], &Config{SASL: plain.Auth{User: "u", Pass: "p"}.AsMechanism()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.wmu.Lock()
	at := c.reauthAt
	c.wmu.Unlock()
	if in := time.Duration(at - clock.Mono()); in <= 0 || in > 10*time.Second {
		t.Fatalf("reauthAt = %d, %v from clock.Mono(); want a monotonic deadline within the 10s session", at, in)
	}
}
