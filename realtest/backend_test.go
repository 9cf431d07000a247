package realtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestBackend_SameCodeOnFakeAndReal runs one test body on the fake cluster
// and on the real broker through kafkatest.Backend.
func TestBackend_SameCodeOnFakeAndReal(t *testing.T) {
	body := func(t *testing.T, b kafkatest.Backend) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		topic := fmt.Sprintf("kpush-backend-%d-%d", runID, topicSeq.Add(1))
		if err := b.CreateTopic(ctx, topic, 2); err != nil {
			t.Fatal(err)
		}
		p, err := kpush.New(kpush.WithBrokers(b.Addrs()...))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close(ctx)
		want := sendAll(t, p, records(topic, 50))
		recs, err := b.ReadAll(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		checkReadBack(t, recs, want)
	}
	t.Run("fake", func(t *testing.T) { body(t, kafkatest.NewTestCluster(t)) })
	t.Run("real", func(t *testing.T) { body(t, cluster(t)) })
}
