package realfaults

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpush/kpush"
)

// throttleGrace is how long after the proxy forwarded a throttled response
// a request may still arrive that the client wrote before reading it.
const throttleGrace = 50 * time.Millisecond

// TestRealFaults_Quota sets a real client quota (producer_byte_rate
// 20 kB/s for the producer's client.id) and sends 400 kB to a one-partition
// topic. The fault proxies record every Produce request and response on
// the wire: the broker must throttle, kpush must count every throttled
// response it got, and after each one it must send that broker no Produce
// request until the throttle time has passed (KIP-219: the broker answers
// at once and mutes the connection; the client must wait). Quotas are per
// broker, so one partition (one leader) makes the broker's limit the
// producer's. franz-go then sends the same records under its own
// client.id and the same quota, for comparison (logged, not judged).
func TestRealFaults_Quota(t *testing.T) {
	fc := sharedFaultCluster(t)
	const rate = 20_000
	id, kgoID := "kpush-quota-test", "kpush-quota-test-franz-go"
	alter := func(remove bool) error {
		var entries []kadm.AlterClientQuotaEntry
		for _, name := range []string{id, kgoID} {
			entries = append(entries, kadm.AlterClientQuotaEntry{
				Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: &name}},
				Ops:    []kadm.AlterClientQuotaOp{{Key: "producer_byte_rate", Value: rate, Remove: remove}},
			})
		}
		resp, err := fc.adm.AlterClientQuotas(context.Background(), entries)
		if err == nil {
			for _, q := range resp {
				if q.Err != nil {
					err = fmt.Errorf("%w: %s", q.Err, q.ErrMessage)
				}
			}
		}
		return err
	}
	// The same workload without a quota, for comparison.
	ctl := time.Now()
	ctlRun := runScenario(t, fc, &scenario{
		value: 1000, keys: 8, perKey: 50, post: 1, minAcked: 1, parts: 1,
		check: func(err error) error { return err },
		opts:  []kpush.Option{kpush.WithClientID(id + "-unlimited")},
	})
	ctlElapsed := time.Since(ctl)
	t.Logf("without a quota: %v, throttles %d", ctlElapsed.Round(time.Millisecond), ctlRun.p.Stats().Throttles)
	if err := alter(false); err != nil {
		t.Fatalf("alter client quotas: %v", err)
	}
	t.Cleanup(func() {
		if err := alter(true); err != nil {
			t.Errorf("remove client quota: %v", err)
		}
	})
	var wire wireTap
	t.Cleanup(wire.attach(fc))

	// At the default five requests in flight, requests written just before
	// a throttled response arrived are allowed (throttleGrace), and the
	// broker's own muting of the connection hides most of a missing wait:
	// the pipelined requests' responses come only when it unmutes. With one
	// request in flight nothing can be written before the response is read,
	// so every request inside a throttle is a violation. Each run has its
	// own topic, whose leader may be another broker with its own quota
	// window, so each sends the full 400 kB.
	var r *run
	for _, c := range []struct {
		name     string
		clientID string
		perKey   int
		grace    time.Duration
		opts     []kpush.Option
	}{
		{"default", id, 50, throttleGrace, nil},
		{"one-in-flight", id, 50, 0, []kpush.Option{kpush.WithMaxInflight(1)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			wire.reset()
			start := time.Now()
			r = runScenario(t, fc, &scenario{
				value: 1000, keys: 8, perKey: c.perKey, post: 1, minAcked: 1, parts: 1,
				check: func(err error) error { return err },
				opts:  append([]kpush.Option{kpush.WithClientID(c.clientID)}, c.opts...),
			})
			elapsed := time.Since(start)
			st := r.p.Stats()
			bytes := float64(r.sc.keys * r.sc.perKey * r.sc.value)
			got := bytes / elapsed.Seconds()
			onWire := wire.summary(c.clientID)
			t.Logf("quota %d B/s: sent %.0f B in %v = %.0f B/s; Stats: throttles %d, requests %d; wire: %v",
				rate, bytes, elapsed.Round(time.Millisecond), got, st.Throttles, st.Requests, onWire)
			if bad := wire.undecoded(); len(bad) > 0 {
				t.Fatalf("the wire tap could not decode %d produce responses, first: %s", len(bad), bad[0])
			}
			if onWire.throttled == 0 {
				t.Fatalf("the broker sent no throttled response under a %d B/s quota", rate)
			}
			if int(st.Throttles) != onWire.throttled {
				t.Errorf("kpush counted %d throttles, the broker sent %d throttled responses", st.Throttles, onWire.throttled)
			}
			bad, judged := wire.throttleViolations(c.clientID, c.grace)
			for i, b := range bad {
				if i == 10 {
					t.Errorf("... %d more", len(bad)-i)
					break
				}
				t.Errorf("kpush did not wait out the throttle: %s", b)
			}
			if judged == 0 {
				t.Errorf("no throttle of at least %v to judge (wire: %v)", 2*c.grace, onWire)
			}
			t.Logf("%d throttles judged, %d requests inside a throttle", judged, len(bad))
			// The broker measures the rate over at least 10 s (quota.window.num
			// 11 × 1 s samples), so about 10 s worth of quota goes through before
			// it throttles; three times the quota is a generous bound.
			if got > 3*rate {
				t.Errorf("throughput %.0f B/s under a %d B/s quota: kpush did not wait out the throttle", got, rate)
			}
		})
	}
	if r == nil || t.Failed() {
		return
	}

	// The same records from franz-go with its own quota, uncompressed like
	// kpush's default (franz-go's default snappy shrinks these values to
	// about 6%, under the quota).
	var kgoThrottles atomic.Int64
	cl, err := kgo.NewClient(kgo.SeedBrokers(fc.clientAddrs()...), kgo.ClientID(kgoID), kgo.DefaultProduceTopic(r.topic),
		kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.WithHooks(throttleHook{&kgoThrottles}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	total := 400
	done := make(chan error, total)
	for i := range total {
		cl.Produce(t.Context(), &kgo.Record{Key: key(i % 8), Value: value(i%8, i/8, 1000)}, func(_ *kgo.Record, err error) { done <- err })
	}
	deadline := time.NewTimer(2 * time.Minute)
	defer deadline.Stop()
	for range total {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("franz-go produce: %v", err)
			}
		case <-deadline.C:
			t.Fatalf("franz-go did not finish %d records in 2m", total)
		}
	}
	kgoBad, kgoJudged := wire.throttleViolations(kgoID, throttleGrace)
	t.Logf("franz-go: hook counted %d throttles; wire: %v; %d of %d judged throttles had a request inside",
		kgoThrottles.Load(), wire.summary(kgoID), len(kgoBad), kgoJudged)
}

// throttleHook counts the throttled responses franz-go sees.
type throttleHook struct{ n *atomic.Int64 }

func (h throttleHook) OnBrokerThrottle(_ kgo.BrokerMetadata, d time.Duration, _ bool) {
	if d > 0 {
		h.n.Add(1)
	}
}
