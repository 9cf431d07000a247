package kafkatest

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestSleepControl_CloseWhileWaking: a control function sleeping in
// SleepControl is woken and the cluster closed at once, many times over.
// kfake alone (Fake().SleepControl) deadlocks its run loop when the close
// lands while the sleep is resuming, and Close then reports its goroutines
// still running; kafkatest's SleepControl makes Close wait for the sleep to
// resume first, so every Close succeeds.
func TestSleepControl_CloseWhileWaking(t *testing.T) {
	rounds := 60
	if testing.Short() {
		rounds = 10
	}
	for i := range rounds {
		c := NewUnstartedCluster(WithTopic("t", 1))
		c.cfg.closeTimeout = time.Second
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		release := make(chan struct{})
		entered := make(chan struct{}, 1)
		f := c.Fake()
		f.ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
			f.KeepControl()
			select {
			case entered <- struct{}{}:
			default:
			}
			c.SleepControl(func() { <-release })
			return nil, nil, false
		})
		cl := newTestClient(t, c)
		ctx, cancel := context.WithCancel(t.Context())
		go topicPartitions(ctx, cl, "t", false) //nolint:errcheck // only needs to reach the control function
		select {
		case <-entered:
		case <-time.After(5 * time.Second):
			t.Fatal("control function not reached")
		}
		close(release)
		err := c.Close()
		cancel()
		cl.Close()
		if err != nil {
			t.Fatalf("round %d: Close right after waking a slept control function: %v", i, err)
		}
	}
}
