package realfaults

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/internal/faultproxy"
)

// leaderOf returns the node leading partition 0 of the run's topic.
func (r *run) leaderOf(part int32) int {
	ld, err := r.fc.leaders(r.ctx, r.topic)
	if err != nil {
		r.t.Errorf("leaders: %v", err)
		return 0
	}
	return int(ld[part])
}

// restart restarts node i and waits until the topic's ISR is full again,
// so the next scenario starts on a healthy cluster.
func (r *run) restart(i int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := r.fc.c.Restart(ctx, i); err != nil {
		r.t.Errorf("restart node %d: %v", i, err)
		return
	}
	if err := r.fc.waitISR(ctx, r.topic, r.sc.parts, r.fc.c.Nodes()); err != nil {
		r.t.Errorf("after restarting node %d: %v", i, err)
	}
}

// TestRealFaults_Baseline runs the model with no fault: the checks
// themselves, on a healthy 3-node cluster.
func TestRealFaults_Baseline(t *testing.T) {
	fc := sharedFaultCluster(t)
	runScenario(t, fc, &scenario{minAcked: 1})
}

// TestRealFaults_KillLeader kills (SIGKILL) the leader of partition 0
// mid-traffic, lets the controller fence it and elect new leaders, and
// restarts it.
func TestRealFaults_KillLeader(t *testing.T) {
	fc := sharedFaultCluster(t)
	runScenario(t, fc, &scenario{minAcked: 0.5, fault: func(r *run) {
		n := r.leaderOf(0)
		r.note("killed node %d", n)
		if err := r.fc.c.Kill(n); err != nil {
			r.t.Errorf("kill: %v", err)
		}
		// Let traffic run against the surviving two before the restart.
		r.waitOutcomes(r.outcomes.Load()+int64(r.sc.keys*r.sc.perKey/4), 20*time.Second)
		r.restart(n)
	}})
}

// waitOutcomes waits until n outcomes have been delivered or d passes
// (then it returns: a stalled producer is caught by the runner's bounds).
func (r *run) waitOutcomes(n int64, d time.Duration) {
	ctx, cancel := context.WithTimeout(r.ctx, d)
	defer cancel()
	n = min(n, int64(r.sc.keys*r.sc.perKey))
	poll(ctx, func() error {
		if r.outcomes.Load() >= n {
			return nil
		}
		return context.DeadlineExceeded
	})
}

// TestRealFaults_ControlledShutdown stops (SIGTERM) the leader of
// partition 0 mid-traffic: the broker moves its leaderships away before it
// exits. Then it is restarted.
func TestRealFaults_ControlledShutdown(t *testing.T) {
	fc := sharedFaultCluster(t)
	runScenario(t, fc, &scenario{minAcked: 0.9, fault: func(r *run) {
		n := r.leaderOf(0)
		r.note("stopped node %d", n)
		if err := r.fc.c.Stop(n); err != nil {
			r.t.Errorf("stop: %v", err)
		}
		r.waitOutcomes(r.outcomes.Load()+int64(r.sc.keys*r.sc.perKey/4), 20*time.Second)
		r.restart(n)
	}})
}

// TestRealFaults_Reassignment moves every partition's replicas off the
// leader of partition 0 (RF 3 → 2, so leaderships move), then back.
func TestRealFaults_Reassignment(t *testing.T) {
	fc := sharedFaultCluster(t)
	runScenario(t, fc, &scenario{minAcked: 0.9, fault: func(r *run) {
		n := int32(r.leaderOf(0))
		var others []int32
		for i := range int32(r.fc.c.Nodes()) {
			if i != n {
				others = append(others, i)
			}
		}
		r.reassign(others)
		r.note("moved replicas off node %d", n)
		r.waitOutcomes(r.outcomes.Load()+int64(r.sc.keys*r.sc.perKey/4), 20*time.Second)
		r.reassign([]int32{n, others[0], others[1]})
		// Back on three replicas with n preferred: move leadership back too,
		// so later scenarios start balanced.
		if _, err := r.fc.adm.ElectLeaders(r.ctx, kadm.ElectPreferredReplica, nil); err != nil {
			r.note("elect preferred leaders: %v", err)
		}
	}})
}

// reassign puts every partition of the run's topic on replicas and waits
// until the reassignment is done and the ISR is full.
func (r *run) reassign(replicas []int32) {
	var req kadm.AlterPartitionAssignmentsReq
	for p := range r.sc.parts {
		req.Assign(r.topic, p, replicas)
	}
	resp, err := r.fc.adm.AlterPartitionAssignments(r.ctx, req)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		r.t.Errorf("alter partition assignments to %v: %v", replicas, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
	defer cancel()
	err = poll(ctx, func() error {
		ls, err := r.fc.adm.ListPartitionReassignments(ctx, kadm.TopicsSet{r.topic: nil})
		if err != nil {
			return err
		}
		if n := len(ls[r.topic]); n > 0 {
			return fmt.Errorf("%d reassignments in progress", n)
		}
		return nil
	})
	if err == nil {
		err = r.fc.waitISR(ctx, r.topic, r.sc.parts, len(replicas))
	}
	if err != nil {
		r.t.Errorf("reassignment to %v: %v", replicas, err)
	}
}

// TestRealFaults_NotEnoughReplicas shrinks the ISR below
// min.insync.replicas and lets it recover. The topic asks for
// min.insync.replicas=3 and one node is killed: killing two of three nodes
// would also lose the KRaft quorum (all three are voters), and then no
// ISR change can be committed at all, so produce requests would time out
// instead of being refused with NOT_ENOUGH_REPLICAS.
func TestRealFaults_NotEnoughReplicas(t *testing.T) {
	fc := sharedFaultCluster(t)
	three := "3"
	runScenario(t, fc, &scenario{
		configs:  map[string]*string{"min.insync.replicas": &three},
		minAcked: 0.5,
		fault: func(r *run) {
			n := (r.leaderOf(0) + 1) % r.fc.c.Nodes() // a follower of partition 0
			r.note("killed node %d", n)
			if err := r.fc.c.Kill(n); err != nil {
				r.t.Errorf("kill: %v", err)
			}
			ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
			err := poll(ctx, func() error {
				if strings.Contains(r.log.String(), "NOT_ENOUGH_REPLICAS") {
					return nil
				}
				return errors.New("no NOT_ENOUGH_REPLICAS in the producer's log yet")
			})
			cancel()
			if err != nil {
				r.t.Errorf("the ISR never shrank below min.insync.replicas: %v", err)
			}
			r.restart(n)
		},
	})
}

// TestRealFaults_ProxyCut refuses and resets every connection to the
// leader of partition 0 for a while.
func TestRealFaults_ProxyCut(t *testing.T) {
	fc := sharedFaultCluster(t)
	runScenario(t, fc, &scenario{minAcked: 0.5, fault: func(r *run) {
		px := r.fc.proxies[r.leaderOf(0)]
		before := px.Accepted()
		px.Set(faultproxy.Cut)
		// Hold the cut until kpush has tried to reconnect a few times.
		ctx, cancel := context.WithTimeout(r.ctx, 20*time.Second)
		poll(ctx, func() error {
			if px.Accepted() >= before+3 {
				return nil
			}
			return errors.New("waiting for reconnects")
		})
		cancel()
		r.note("cut: %d connections refused", px.Accepted()-before)
		px.Set(faultproxy.Pass)
	}})
}

// TestRealFaults_ProxyDelay delays every byte to and from every broker by
// 300 ms for a quarter of the run.
func TestRealFaults_ProxyDelay(t *testing.T) {
	fc := sharedFaultCluster(t)
	runScenario(t, fc, &scenario{minAcked: 1, fault: func(r *run) {
		for _, px := range r.fc.proxies {
			px.SetDelay(300 * time.Millisecond)
			px.Set(faultproxy.Delay)
		}
		r.waitOutcomes(r.outcomes.Load()+int64(r.sc.keys*r.sc.perKey/4), 30*time.Second)
		for _, px := range r.fc.proxies {
			px.Set(faultproxy.Pass)
		}
	}})
}

// TestRealFaults_BlackHole silently drops everything to and from the
// leader of partition 0 for longer than the request timeout.
func TestRealFaults_BlackHole(t *testing.T) {
	fc := sharedFaultCluster(t)
	runScenario(t, fc, &scenario{minAcked: 0.5, fault: func(r *run) {
		px := r.fc.proxies[r.leaderOf(0)]
		before := px.Accepted()
		px.Set(faultproxy.BlackHole)
		// kpush gives up on a silent connection after the request timeout
		// and dials again; hold the black hole until it has.
		ctx, cancel := context.WithTimeout(r.ctx, 40*time.Second)
		err := poll(ctx, func() error {
			if px.Accepted() > before {
				return nil
			}
			return errors.New("kpush has not redialed the silent broker")
		})
		cancel()
		if err != nil {
			r.t.Errorf("black hole: %v", err)
		}
		r.note("black hole swallowed %d bytes", px.Swallowed())
		px.Set(faultproxy.Pass)
	}})
}

// TestRealFaults_TopicRecreated deletes the topic while records are sent
// to it and creates it again. Records acknowledged before the deletion are
// gone with it, so the model checks every other rule, and that sending
// resumes on the new topic.
func TestRealFaults_TopicRecreated(t *testing.T) {
	fc := sharedFaultCluster(t)
	runScenario(t, fc, &scenario{topicReset: true, fault: func(r *run) {
		resp, err := r.fc.adm.DeleteTopics(r.ctx, r.topic)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			r.t.Errorf("delete topic: %v", err)
			return
		}
		ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
		defer cancel()
		err = poll(ctx, func() error { // deletion is asynchronous: TOPIC_ALREADY_EXISTS until done
			return r.fc.createTopic(ctx, r.topic, r.sc.parts, nil)
		})
		if err != nil {
			r.t.Errorf("recreate topic: %v", err)
		}
	}})
}

// TestRealFaults_ProducerStateExpired lets the broker expire the
// producer's state (producer.id.expiration.ms) while the producer is idle
// halfway through, then every key resumes with pipelined sends: the
// broker no longer knows the producer ID's sequences.
func TestRealFaults_ProducerStateExpired(t *testing.T) {
	fc := sharedFaultCluster(t)
	setClusterConfig(t, fc, "producer.id.expiration.ms", "2000")
	runScenario(t, fc, &scenario{minAcked: 1, window: 32, midway: func(r *run) {
		ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
		defer cancel()
		err := poll(ctx, func() error {
			ds, err := r.fc.adm.DescribeProducers(ctx, kadm.TopicsSet{r.topic: nil})
			if err != nil {
				return err
			}
			n := 0
			ds.EachPartition(func(p kadm.DescribedProducersPartition) { n += len(p.ActiveProducers) })
			if n > 0 {
				return fmt.Errorf("%d producer states still held", n)
			}
			return nil
		})
		if err != nil {
			r.t.Errorf("producer state never expired: %v", err)
		}
	}})
}

// setClusterConfig sets a dynamic cluster-wide broker config for the
// test's duration.
func setClusterConfig(t *testing.T, fc *faultCluster, name, value string) {
	t.Helper()
	set := func(v *string) error {
		op := kadm.SetConfig
		if v == nil {
			op = kadm.DeleteConfig
		}
		resp, err := fc.adm.AlterBrokerConfigs(context.Background(), []kadm.AlterConfig{{Op: op, Name: name, Value: v}})
		if err == nil {
			for _, r := range resp {
				if r.Err != nil {
					err = fmt.Errorf("%w: %s", r.Err, r.ErrMessage)
				}
			}
		}
		return err
	}
	if err := set(&value); err != nil {
		t.Fatalf("set %s=%s: %v", name, value, err)
	}
	t.Cleanup(func() {
		if err := set(nil); err != nil {
			t.Errorf("reset %s: %v", name, err)
		}
	})
}

// TestRealFaults_IdleConnectionsClosed pauses halfway until the brokers
// have closed every idle client connection (connections.max.idle.ms=4000
// on the fault cluster), then resumes: no record may fail or end unknown
// because of that.
func TestRealFaults_IdleConnectionsClosed(t *testing.T) {
	fc := sharedFaultCluster(t)
	runScenario(t, fc, &scenario{
		minAcked: 1,
		check:    func(err error) error { return err },
		midway: func(r *run) {
			ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
			defer cancel()
			err := poll(ctx, func() error {
				n := 0
				for _, px := range r.fc.proxies {
					n += px.Conns()
				}
				if n > 0 {
					return fmt.Errorf("%d client connections still open", n)
				}
				return nil
			})
			if err != nil {
				r.t.Errorf("brokers did not close idle connections: %v", err)
			}
		},
	})
}

// TestRealFaults_MessageMaxBytes sends 2 KB records in large pipelined
// batches to a topic whose max.message.bytes is 64 KiB: batches the
// broker refuses as too large must be split and all acknowledged; a single
// record larger than the limit fails as not written with
// ErrMessageTooLarge.
func TestRealFaults_MessageMaxBytes(t *testing.T) {
	fc := sharedFaultCluster(t)
	limit := "65536"
	r := runScenario(t, fc, &scenario{
		configs:  map[string]*string{"max.message.bytes": &limit},
		value:    2000,
		window:   128,
		keys:     4,
		perKey:   500,
		parts:    2,
		bufLimit: 4 << 20,
		minAcked: 1,
		check:    func(err error) error { return err },
		opts:     []kpush.Option{kpush.WithLinger(20 * time.Millisecond)},
	})
	t.Logf("batches %d, avg %.1f records", r.p.Stats().Batches, r.p.Stats().AvgBatchRecords)
}

// TestRealFaults_RecordOverMessageMaxBytes sends one record larger than
// the topic's max.message.bytes: it must fail as not written, with the
// broker's MESSAGE_TOO_LARGE, and be absent.
func TestRealFaults_RecordOverMessageMaxBytes(t *testing.T) {
	fc := sharedFaultCluster(t)
	limit := "65536"
	topic := "over-max-message-bytes"
	if err := fc.createTopic(t.Context(), topic, 1, map[string]*string{"max.message.bytes": &limit}); err != nil {
		t.Fatal(err)
	}
	p, err := kpush.New(kpush.WithBrokers(fc.clientAddrs()...), kpush.WithDeliveryTimeout(deliveryTimeout))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	_, refused := p.Send(t.Context(), &kpush.Record{Topic: topic, Value: make([]byte, 100_000)})
	if err := refused; !errors.Is(err, kpush.ErrNotWritten) || !(errors.Is(err, kpush.ErrMessageTooLarge) || errors.Is(err, kpush.ErrRecordTooLarge)) {
		t.Fatalf("Send(100 kB) to a 64 KiB topic = %v, want not written and MESSAGE_TOO_LARGE", err)
	}
	if _, err := p.Send(t.Context(), &kpush.Record{Topic: topic, Value: []byte("small")}); err != nil {
		t.Fatalf("Send after the refused record: %v", err)
	}
	got, err := fc.c.ReadAll(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || string(got[0].Value) != "small" {
		t.Fatalf("log holds %d records, want only the small one", len(got))
	}
	t.Logf("refused with: %v", refused)
}
