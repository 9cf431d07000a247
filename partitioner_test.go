package kpush_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestSend_UsePartitionHonoured: a record with UsePartition goes to its
// own Partition under the default partitioner (keyed or not), and a record
// without it is partitioned as before even when Partition is set (the zero
// value means "no partition").
func TestSend_UsePartitionHonoured(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("own", 3))
	p := newProducer(t, c)
	ctx := testCtx(t)
	key := []byte("k-0") // murmur2 partition, found below
	res, err := p.Send(ctx, &kpush.Record{Topic: "own", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	hashed := res.Partition
	own := (hashed + 1) % 3
	for _, tc := range []struct {
		name string
		rec  kpush.Record
		want int32
	}{
		{"keyed with UsePartition", kpush.Record{Topic: "own", Key: key, Partition: own, UsePartition: true}, own},
		{"keyless with UsePartition", kpush.Record{Topic: "own", Partition: own, UsePartition: true}, own},
		{"partition 0 with UsePartition", kpush.Record{Topic: "own", Key: key, Partition: 0, UsePartition: true}, 0},
		{"Partition without UsePartition is ignored", kpush.Record{Topic: "own", Key: key, Partition: own}, hashed},
	} {
		for range 3 {
			res, err := p.Send(ctx, &tc.rec)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if res.Partition != tc.want {
				t.Fatalf("%s: went to partition %d, want %d", tc.name, res.Partition, tc.want)
			}
		}
	}
}

// lenPartitioner is a custom partitioner: a record goes to len(value) % n.
// It records the topics it was made for and the availability it was told.
type lenPartitioner struct {
	mu     sync.Mutex
	topics []string
	avail  chan []bool
}

func (l *lenPartitioner) ForTopic(topic string) kpush.TopicPartitioner {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.topics = append(l.topics, topic)
	return lenTopic{l}
}

type lenTopic struct{ l *lenPartitioner }

func (lenTopic) Partition(r *kpush.Record, n int) int { return len(r.Value) % n }

func (t lenTopic) SetAvailable(ok []bool) {
	select {
	case t.l.avail <- append([]bool(nil), ok...):
	default:
	}
}

// TestSend_CustomPartitioner: a custom Partitioner chooses keyed and
// keyless records' partitions, is asked once per topic, hears which
// partitions have a leader, and UsePartition still wins over it.
func TestSend_CustomPartitioner(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("cp", 4), kafkatest.WithTopic("cp2", 2))
	lp := &lenPartitioner{avail: make(chan []bool, 1)}
	p := newProducer(t, c, kpush.WithPartitioner(lp))
	ctx := testCtx(t)
	for i := range 8 {
		for _, key := range [][]byte{nil, []byte("key")} {
			res, err := p.Send(ctx, &kpush.Record{Topic: "cp", Key: key, Value: make([]byte, i)})
			if err != nil {
				t.Fatal(err)
			}
			if res.Partition != int32(i%4) {
				t.Fatalf("value of %d bytes (key %q) went to partition %d, want %d", i, key, res.Partition, i%4)
			}
		}
	}
	res, err := p.Send(ctx, &kpush.Record{Topic: "cp2", Value: []byte("abc"), Partition: 0, UsePartition: true})
	if err != nil || res.Partition != 0 {
		t.Fatalf("UsePartition under a custom partitioner: partition %d, %v; want 0", res.Partition, err)
	}
	select {
	case ok := <-lp.avail:
		if len(ok) != 4 && len(ok) != 2 {
			t.Errorf("SetAvailable(%v): want one flag per partition", ok)
		}
	case <-ctx.Done():
		t.Fatal("SetAvailable never called")
	}
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if len(lp.topics) != 2 || lp.topics[0] != "cp" || lp.topics[1] != "cp2" {
		t.Errorf("ForTopic called for %v, want [cp cp2]", lp.topics)
	}
}

// TestPartitionerFunc: a PartitionerFunc gets the resolved topic (the
// default topic when the record names none).
func TestPartitionerFunc(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("pf", 3))
	var topic atomic.Value
	f := kpush.PartitionerFunc(func(tp string, _ *kpush.Record, n int) int {
		topic.Store(tp)
		return n - 1
	})
	p := newProducer(t, c, kpush.WithPartitioner(f), kpush.WithDefaultTopic("pf"))
	res, err := p.Send(testCtx(t), &kpush.Record{Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Partition != 2 || topic.Load() != "pf" {
		t.Fatalf("partition %d for topic %v, want 2 for pf", res.Partition, topic.Load())
	}
}

// slowBrokerCluster returns a 3-broker cluster with topic (6 partitions,
// partition i led by broker i%3) whose broker 0 holds every produce
// request until release is closed, and the slow partitions.
func slowBrokerCluster(t testing.TB, topic string) (c *kafkatest.Cluster, release chan struct{}, slow map[int32]bool) {
	t.Helper()
	c = kafkatest.NewTestCluster(t, kafkatest.WithBrokers(3), kafkatest.WithTopic(topic, 6))
	f := c.Fake()
	slow = map[int32]bool{}
	for i := range int32(6) {
		if err := f.MoveTopicPartition(topic, i, i%3); err != nil {
			t.Fatal(err)
		}
		if f.LeaderFor(topic, i) == 0 {
			slow[i] = true
		}
	}
	release = make(chan struct{})
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		if f.CurrentNode() == 0 {
			// SleepControl lets the other brokers answer meanwhile.
			c.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	return c, release, slow
}

// TestSend_KeylessAvoidsStalledBroker: with one broker of three not
// answering, the default partitioner sends most keyless records to the
// healthy brokers' partitions (KIP-794 adaptive partitioning: a partition
// with more bytes waiting for an outcome is picked less). The uniform
// sticky choice sends about a third (2 of 6 partitions) to the stalled
// broker.
func TestSend_KeylessAvoidsStalledBroker(t *testing.T) {
	c, release, slow := slowBrokerCluster(t, "stall")
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	p := newProducer(t, c)
	ctx := testCtx(t)
	n := 80000 // 100-byte values: about 500 sticky switches
	if raceEnabled {
		n = 40000 // still about 250 switches
	}
	type outcome struct {
		part int32
		err  error
	}
	done := make(chan outcome, n)
	value := make([]byte, 100)
	perPart := map[int32]int{}
	toSlow, received := 0, 0
	take := func(wctx context.Context) {
		select {
		case o := <-done:
			if o.err != nil {
				t.Fatalf("record failed: %v", o.err)
			}
			received++
			perPart[o.part]++
			if slow[o.part] {
				toSlow++
			}
		case <-wctx.Done():
			t.Fatalf("%d of %d outcomes: %v", received, n, wctx.Err())
		}
	}
	// Waves of records (5 sticky batches each); before the next wave, half
	// of those sent so far (less two waves) must be acknowledged, so the
	// healthy brokers keep up as they would under a steady load. Records
	// on the stalled broker get no outcome until it is released.
	const wave = 800
	for sent := 0; sent < n; {
		for range wave {
			p.SendAsync(ctx, &kpush.Record{Topic: "stall", Value: value}, func(r kpush.Result, err error) { done <- outcome{r.Partition, err} })
		}
		sent += wave
		for received < sent/2-2*wave {
			take(ctx)
		}
	}
	close(release)
	released = true
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for received < n {
		take(wctx)
	}
	frac := float64(toSlow) / float64(n)
	t.Logf("%.3f of keyless records went to the stalled broker's partitions %v; per partition %v", frac, slow, perPart)
	if frac > 0.25 {
		t.Errorf("%.3f of keyless records went to the stalled broker's partitions, want at most 0.25 (uniform: about 0.33)", frac)
	}
}

// TestSend_ForTopicRunsOutsideProducerLocks: a custom Partitioner's
// ForTopic may call back into the producer (here Stats, which takes the
// producer's lock); before, ForTopic ran under that lock and the first
// Send to the topic deadlocked.
func TestSend_ForTopicRunsOutsideProducerLocks(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("ft", 2))
	var p *kpush.Producer // set before ForTopic runs (ready)
	ready := make(chan struct{})
	part := kpush.PartitionerFunc(func(string, *kpush.Record, int) int { return 1 })
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...), kpush.WithPartitioner(forTopicFunc(func(topic string) kpush.TopicPartitioner {
		<-ready
		_ = p.Stats()
		return part.ForTopic(topic)
	})))
	if err != nil {
		t.Fatal(err)
	}
	close(ready)
	errc := make(chan error, 1)
	go func() {
		_, err := p.Send(context.Background(), &kpush.Record{Topic: "ft", Value: []byte("v")})
		errc <- err
	}()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		// Not closed: Close would wait on the deadlocked lock too.
		t.Fatal("Send did not return: ForTopic deadlocked on the producer's lock")
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// forTopicFunc is a Partitioner from its ForTopic.
type forTopicFunc func(topic string) kpush.TopicPartitioner

func (f forTopicFunc) ForTopic(topic string) kpush.TopicPartitioner { return f(topic) }
