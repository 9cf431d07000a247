package realfaults

import (
	"context"
	"testing"
	"time"
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
