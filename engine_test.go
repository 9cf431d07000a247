package kpush_test

// Engine scenarios at the producer level: faults injected into the fake
// cluster, results checked by reading the partitions back.

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// sendKeyed sends perKey records for each of keys keys from one goroutine
// per key and returns once all have outcomes; it fails the test on errors.
func sendKeyed(t *testing.T, ctx context.Context, p *kpush.Producer, topic string, keys, perKey int) {
	t.Helper()
	var wg sync.WaitGroup
	for k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perKey {
				_, err := p.Send(ctx, &kpush.Record{Topic: topic, Key: []byte("k" + strconv.Itoa(k)), Value: []byte(strconv.Itoa(i))})
				if err != nil {
					t.Errorf("key %d record %d: %v", k, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// checkExactlyOnceInOrder reads topic back and checks every key's values
// are 0..perKey-1 exactly once, in order.
func checkExactlyOnceInOrder(t *testing.T, ctx context.Context, c *kafkatest.Cluster, topic string, keys, perKey int) {
	t.Helper()
	got, err := c.ReadAll(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	next := map[string]int{}
	for _, r := range got {
		k := string(r.Key)
		if string(r.Value) != strconv.Itoa(next[k]) {
			t.Fatalf("key %s: partition %d offset %d holds %s, want %d (duplicate or reordered)", k, r.Partition, r.Offset, r.Value, next[k])
		}
		next[k]++
	}
	if len(got) != keys*perKey {
		t.Fatalf("read %d records, want %d", len(got), keys*perKey)
	}
}

func TestEngine_LeaderMovesUnderTraffic(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithBrokers(3), kafkatest.WithTopic("move", 4))
	p := newProducer(t, c, kpush.WithRetryBackoff(5*time.Millisecond))
	ctx := testCtx(t)
	stop := make(chan struct{})
	moved := make(chan int)
	go func() {
		n := 0
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				moved <- n
				return
			case <-tick.C:
				part := int32(n % 4)
				leader := c.Fake().LeaderFor("move", part)
				c.Fake().MoveTopicPartition("move", part, (leader+1)%3)
				n++
			}
		}
	}()
	sendKeyed(t, ctx, p, "move", 40, 40)
	close(stop)
	t.Logf("%d leader moves, %d retries", <-moved, p.Stats().Retries)
	checkExactlyOnceInOrder(t, ctx, c, "move", 40, 40)
}

func TestEngine_EpochBumpOnUnknownProducerID(t *testing.T) {
	for _, code := range []*kerr.Error{kerr.UnknownProducerID, kerr.OutOfOrderSequenceNumber} {
		t.Run(code.Message, func(t *testing.T) {
			c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("bump", 2))
			p := newProducer(t, c, kpush.WithRetryBackoff(5*time.Millisecond))
			ctx := testCtx(t)
			var inits atomic.Int32 // written on the cluster's goroutine
			c.Fake().ControlKey(int16(kmsg.InitProducerID), func(kmsg.Request) (kmsg.Response, error, bool) {
				c.Fake().KeepControl()
				inits.Add(1)
				return nil, nil, false
			})
			sendKeyed(t, ctx, p, "bump", 4, 10) // producer ID loaded, sequences advanced
			c.Fake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "bump", Partitions: []int32{0}, Err: code})
			var wg sync.WaitGroup
			for k := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 10; i < 30; i++ {
						if _, err := p.Send(ctx, &kpush.Record{Topic: "bump", Key: []byte("k" + strconv.Itoa(k)), Value: []byte(strconv.Itoa(i))}); err != nil {
							t.Errorf("key %d record %d: %v", k, i, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			checkExactlyOnceInOrder(t, ctx, c, "bump", 4, 30)
			// The faulted partition's records are acknowledged only under
			// the new epoch (it sends nothing under the old ID after the
			// fault, phaseEpoch), so the bump's InitProducerID reached the
			// broker before the last of them was acknowledged. (It used to
			// be resent under the old ID, and the bump could come ~1.5 ms
			// after the last acknowledgement: 7 runs in 200.)
			if n := inits.Load(); n < 2 {
				t.Fatalf("%d InitProducerID requests; want a bump after %s", n, code.Message)
			}
		})
	}
}

// TestEngine_ThrottledResponses: responses carrying a throttle time (and
// a retriable error) are honoured and retried; nothing is lost or doubled.
// Honoured means held back (KIP-219): after reading a throttled response,
// kpush writes no produce request to that broker until the throttle time
// has passed, so within the throttle time after the broker answered, the
// broker sees only requests kpush wrote before it read the answer — at most
// the rest of its in-flight window.
func TestEngine_ThrottledResponses(t *testing.T) {
	const (
		throttle    = 30 * time.Millisecond
		maxInflight = 5 // kpush's default
	)
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("throttle", 2))
	p := newProducer(t, c, kpush.WithRetryBackoff(time.Millisecond))
	ctx := testCtx(t)
	sendKeyed(t, ctx, p, "throttle", 4, 5)
	// Written on the cluster's goroutine, read after the senders are done.
	var (
		mu        sync.Mutex
		arrivals  []time.Time // every produce request, as the broker handles it
		throttled []time.Time // when each throttled answer was given
	)
	c.Fake().ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake().KeepControl()
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		arrivals = append(arrivals, now)
		if len(throttled) == 5 {
			return nil, nil, false
		}
		throttled = append(throttled, now)
		return rejectProduce(req.(*kmsg.ProduceRequest), kerr.NotEnoughReplicas, int32(throttle/time.Millisecond)), nil, true
	})
	sendKeyed(t, ctx, p, "throttle", 4, 25)
	if got := p.Stats().Throttles; got != 5 {
		t.Fatalf("%d throttled responses counted, want 5", got)
	}
	mu.Lock()
	for i, at := range throttled {
		if n := requestsWithin(arrivals, at, throttle); n > maxInflight-1 {
			t.Errorf("throttled answer %d: %d produce requests within %v after it, want at most %d (written before it was read): the throttle was not honoured", i, n, throttle, maxInflight-1)
		}
	}
	mu.Unlock()
	got, err := c.ReadAll(ctx, "throttle")
	if err != nil {
		t.Fatal(err)
	}
	// Each key got values 0..4 (before the throttling), then 0..24.
	seen := map[string]int{}
	for _, r := range got {
		i := seen[string(r.Key)]
		want := i
		if i >= 5 {
			want = i - 5
		}
		if string(r.Value) != strconv.Itoa(want) {
			t.Fatalf("key %s record %d: %s, want %d (duplicate or reordered)", r.Key, i, r.Value, want)
		}
		seen[string(r.Key)]++
	}
	if len(got) != 4*30 {
		t.Fatalf("read %d records, want %d", len(got), 4*30)
	}
}

// requestsWithin counts the times in sorted arrivals strictly after at and
// before at+d.
func requestsWithin(arrivals []time.Time, at time.Time, d time.Duration) int {
	n := 0
	for _, a := range arrivals {
		if a.After(at) && a.Before(at.Add(d)) {
			n++
		}
	}
	return n
}

// rejectProduce answers every partition of req with code and a throttle.
func rejectProduce(req *kmsg.ProduceRequest, code *kerr.Error, throttleMs int32) *kmsg.ProduceResponse {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	resp.ThrottleMillis = throttleMs
	for _, rt := range req.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = code.Code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// TestEngine_SplitsBatchOnMessageTooLarge: a batch larger than the topic's
// limit is split and resent, like the Java producer does.
func TestEngine_SplitsBatchOnMessageTooLarge(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("split", 1),
		kafkatest.WithKfakeOptions(kfake.BrokerConfigs(map[string]string{"message.max.bytes": "4000"})))
	p := newProducer(t, c, kpush.WithMaxInflight(1))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "split", Value: []byte("0")}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	holdProduce(c, release)
	var wg sync.WaitGroup
	const n = 100
	value := strings.Repeat("v", 200)
	for i := 1; i <= n; i++ {
		wg.Add(1)
		p.SendAsync(ctx, &kpush.Record{Topic: "split", Value: []byte(strconv.Itoa(i) + value)}, func(_ kpush.Result, err error) {
			defer wg.Done()
			if err != nil {
				t.Errorf("record %d: %v", i, err)
			}
		})
		if i == 1 {
			waitFor(t, func() bool { return p.Stats().InflightRequests == 1 })
		}
	}
	c.Fake().DropControl()
	close(release)
	wg.Wait()
	got, err := c.ReadAll(ctx, "split")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n+1 {
		t.Fatalf("read %d records, want %d", len(got), n+1)
	}
	for i, r := range got {
		if !strings.HasPrefix(string(r.Value), strconv.Itoa(i)) {
			t.Fatalf("offset %d holds %.10s…", i, r.Value)
		}
	}
}

// TestEngine_ConnectionCutMidRequest: the broker closes the connection
// instead of answering; records are retried and written exactly once.
func TestEngine_ConnectionCutMidRequest(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("cut", 3))
	p := newProducer(t, c, kpush.WithRetryBackoff(5*time.Millisecond))
	ctx := testCtx(t)
	sendKeyed(t, ctx, p, "cut", 6, 5)
	cuts := 0 // only touched on the cluster's goroutine
	c.Fake().ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake().KeepControl()
		cuts++
		if cuts%7 != 0 || cuts > 70 {
			return nil, nil, false
		}
		return nil, errCut, true // kfake closes the connection
	})
	var wg sync.WaitGroup
	for k := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 5; i < 60; i++ {
				if _, err := p.Send(ctx, &kpush.Record{Topic: "cut", Key: []byte("k" + strconv.Itoa(k)), Value: []byte(strconv.Itoa(i))}); err != nil {
					t.Errorf("key %d record %d: %v", k, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	checkExactlyOnceInOrder(t, ctx, c, "cut", 6, 60)
}

var errCut = &kerr.Error{Message: "test: cut the connection"}

// TestClose_NoGoroutineLeak: after Close (and after a failed New) every
// kpush goroutine has exited.
func TestClose_NoGoroutineLeak(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithBrokers(2), kafkatest.WithTopic("leak", 4))
	ctx := testCtx(t)
	if _, err := kpush.New(kpush.WithBrokers("bad")); err == nil {
		t.Fatal("New accepted a bad broker")
	}
	checkNoKpushGoroutines(t, "after a failed New")
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	sendKeyed(t, ctx, p, "leak", 10, 10)
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Unreachable broker: Close still returns and cleans up.
	p2, err := kpush.New(kpush.WithBrokers("127.0.0.1:1"), kpush.WithDialTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	p2.SendAsync(short, &kpush.Record{Topic: "leak"}, nil) // waits for metadata until short ends
	p2.Close(short)

	checkNoKpushGoroutines(t, "after Close")
}
