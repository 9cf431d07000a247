package sink

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/internal/clock"
	"github.com/kpush/kpush/internal/idem"
	"github.com/kpush/kpush/internal/wire"
)

// chanN hands every outcome to a channel.
type chanN chan *Pending

func (c chanN) Notify(p *Pending) { c <- p }

// A reaper scan that runs while a request's batch is between two of the
// lists it scans (drained but not yet tracked; untracked but not yet back
// in the partition's retries) must not lose sight of the batch's deadline:
// it used to sleep until its next maxWait, so the record ended up to
// maxWait after its delivery deadline. Each case holds the real sink loop
// (or reader goroutine) inside its window until the reaper's first scan
// has finished; the broker refuses the request (NOT_ENOUGH_REPLICAS, with
// a retry backoff of an hour), so only the reaper can end the record.
func TestReaper_SeesBatchHandedOverDuringScan(t *testing.T) {
	for _, tc := range []struct {
		name string
		w    handOver
	}{
		{"drain to track", drainToTrack},
		{"untrack to handle", untrackToHandle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const maxWait = time.Second
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				return refuseProduce(req.(*kmsg.ProduceRequest), kerr.NotEnoughReplicas), nil, true
			})
			e := NewEngine(Config{Acks: -1, MaxInflight: 5, MaxBatchBytes: 1 << 20, RetryBackoff: time.Hour,
				RequestTimeout: 10 * time.Second, Wire: &wire.Config{}}, idem.NewManager(false))
			scanned := make(chan struct{}, 1)
			e.reaper.testHookScanned = func() {
				select {
				case scanned <- struct{}{}:
				default:
				}
			}
			var once sync.Once
			e.reaper.testHookWindow = func(w handOver) {
				if w == tc.w {
					once.Do(func() {
						select {
						case <-scanned: // the reaper's first scan, at maxWait
						case <-time.After(10 * time.Second):
							t.Error("no reaper scan within 10s")
						}
					})
				}
			}
			s := e.NewSink(0, c.ListenAddrs()[0])
			p := e.NewPartitionQueue("t", 0)
			e.Go(func() {
				e.Reap(func() ([]*PartitionQueue, []*Sink) { return []*PartitionQueue{p}, []*Sink{s} }, maxWait)
			})
			defer func() { e.Stop(); e.Wait() }()

			out := make(chanN, 1)
			deadline := clock.Mono() + int64(maxWait+200*time.Millisecond) // just after the first scan
			p.SetLeader(s)
			p.Add(newRec(out, deadline))
			select {
			case r := <-out:
				late := time.Duration(clock.Mono() - deadline)
				if !errors.Is(r.Err, ErrDeliveryTimeout) {
					t.Fatalf("outcome %v, want ErrDeliveryTimeout", r.Err)
				}
				if late > maxWait/2 {
					t.Fatalf("outcome %v after its delivery deadline: the reaper's scan missed the batch in its hand-over and slept until its next maxWait (%v)", late.Round(time.Millisecond), maxWait)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no outcome within 10s")
			}
		})
	}
}

// refuseProduce answers every partition of req with code.
func refuseProduce(req *kmsg.ProduceRequest, code *kerr.Error) *kmsg.ProduceResponse {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
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
