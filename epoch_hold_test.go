package kpush_test

// The idempotent epoch bump at the producer level (KIP-360): what a
// partition whose sequences broke sends while the new epoch is on its way,
// and what happens when the bump itself keeps failing.

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// producedBatch is one partition's batch as the fake broker received it.
type producedBatch struct {
	part  int32
	id    int64
	epoch int16
	seq   int32
}

// logProduce records every batch of topic the fake broker receives, in
// arrival order (the control runs on the cluster's goroutine, before any
// fault answers the request).
func logProduce(c *kafkatest.Cluster, topic string, mu *sync.Mutex, log *[]producedBatch) {
	c.Fake().ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake().KeepControl()
		mu.Lock()
		defer mu.Unlock()
		for _, t := range req.(*kmsg.ProduceRequest).Topics {
			if t.Topic != topic {
				continue
			}
			for _, p := range t.Partitions {
				var b kmsg.RecordBatch
				if b.ReadFrom(p.Records) == nil {
					*log = append(*log, producedBatch{p.Partition, b.ProducerID, b.ProducerEpoch, b.FirstSequence})
				}
			}
		}
		return nil, nil, false
	})
}

// TestEngine_EpochBumpHoldsFaultedPartition: after a sign that its
// sequences under the producer ID broke (UNKNOWN_PRODUCER_ID, or
// OUT_OF_ORDER_SEQUENCE_NUMBER with no earlier failure to explain it), a
// partition sends nothing under that ID again — neither its retry nor new
// records — until the new epoch is installed; then it resends, renumbered
// from sequence 0. Resending under the old ID is refused again (a wasted
// round trip per backoff) or, by a broker that holds no state for the ID,
// taken as a fresh first batch that the bump then cannot account for. The
// other partition keeps sending under the old ID while the bump is held.
func TestEngine_EpochBumpHoldsFaultedPartition(t *testing.T) {
	for _, code := range []*kerr.Error{kerr.UnknownProducerID, kerr.OutOfOrderSequenceNumber} {
		t.Run(code.Message, func(t *testing.T) {
			c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("hold", 2))
			p := newProducer(t, c, kpush.WithRetryBackoff(5*time.Millisecond))
			ctx := testCtx(t)
			var (
				mu     sync.Mutex // guards log, fault and inits
				log    []producedBatch
				inits  int
				fault  int // index in log of the faulted batch
				arrive = make(chan struct{})
				hold   = make(chan struct{})
			)
			logProduce(c, "hold", &mu, &log)
			c.Fake().ControlKey(int16(kmsg.InitProducerID), func(kmsg.Request) (kmsg.Response, error, bool) {
				c.Fake().KeepControl()
				mu.Lock()
				inits++
				bump := inits == 2
				mu.Unlock()
				if bump {
					// Hold the bump's answer for well over the retry backoff
					// and until partition 1 has shown it is not held by it
					// (bounded).
					close(arrive)
					c.SleepControl(func() {
						minHold := time.After(100 * time.Millisecond)
						select {
						case <-hold:
						case <-time.After(10 * time.Second):
						}
						<-minHold
					})
				}
				return nil, nil, false
			})
			send := func(ctx context.Context, part int32, from, to int) error {
				for i := from; i < to; i++ {
					rec := &kpush.Record{Topic: "hold", Partition: part, UsePartition: true,
						Key: []byte("k" + strconv.Itoa(int(part))), Value: []byte(strconv.Itoa(i))}
					if _, err := p.Send(ctx, rec); err != nil {
						return err
					}
				}
				return nil
			}
			for part := range int32(2) {
				if err := send(ctx, part, 0, 10); err != nil { // ID loaded, sequences advanced
					t.Fatal(err)
				}
			}
			mu.Lock()
			fault = len(log) // partition 0's next batch is the faulted one
			mu.Unlock()
			c.Fake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "hold", Partitions: []int32{0}, Err: code})
			// One Send at a time: partition 0 has one batch in flight, so
			// every batch after the faulted one was written after kpush
			// read the fault.
			done0 := make(chan error, 1)
			go func() { done0 <- send(ctx, 0, 10, 30) }()
			select {
			case <-arrive:
			case <-time.After(10 * time.Second):
				t.Fatal("no InitProducerID bump within 10s of the fault")
			}
			// Partition 1 is fine: its records go out under the old ID
			// while the bump is held.
			ctx1, cancel1 := context.WithTimeout(ctx, 5*time.Second)
			err1 := send(ctx1, 1, 10, 30)
			cancel1()
			close(hold)
			if err1 != nil {
				t.Errorf("partition 1 while partition 0's bump was held: %v", err1)
			}
			if err := <-done0; err != nil {
				t.Fatalf("partition 0: %v", err)
			}
			checkExactlyOnceInOrder(t, ctx, c, "hold", 2, 30)

			mu.Lock()
			defer mu.Unlock()
			var p0 []producedBatch
			for _, b := range log[fault:] {
				if b.part == 0 {
					p0 = append(p0, b)
				}
			}
			if len(p0) < 2 {
				t.Fatalf("%d batches of partition 0 from the faulted one on, want at least 2", len(p0))
			}
			bad := p0[0]
			for i, b := range p0[1:] {
				if b.id == bad.id && b.epoch == bad.epoch {
					t.Fatalf("partition 0 batch %d after the %s fault sent under the old producer ID %d/%d (seq %d) before the new epoch", i+1, code.Message, b.id, b.epoch, b.seq)
				}
			}
			if p0[1].seq != 0 {
				t.Errorf("first batch under the new epoch %d/%d at sequence %d, want 0", p0[1].id, p0[1].epoch, p0[1].seq)
			}
		})
	}
}

// TestEngine_FailingBumpExpiresHeldRecords: when every InitProducerID
// after the first fails, the held partition's records still get their
// outcome at their delivery deadline (ErrDeliveryTimeout, definitely not
// written), the other partition's records are acknowledged, and the
// failing InitProducerID is retried with a growing backoff, not at the
// metadata refresher's floor.
func TestEngine_FailingBumpExpiresHeldRecords(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("nobump", 2))
	p := newProducer(t, c, kpush.WithRetryBackoff(5*time.Millisecond),
		kpush.WithRequestTimeout(time.Second), kpush.WithDeliveryTimeout(2*time.Second))
	ctx := testCtx(t)
	var (
		mu    sync.Mutex
		inits []time.Time // arrival of each failed bump
		n     int
	)
	c.Fake().ControlKey(int16(kmsg.InitProducerID), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake().KeepControl()
		mu.Lock()
		defer mu.Unlock()
		if n++; n == 1 {
			return nil, nil, false
		}
		inits = append(inits, time.Now())
		resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp, nil, true
	})
	send := func(part int32, i int) error {
		_, err := p.Send(ctx, &kpush.Record{Topic: "nobump", Partition: part, UsePartition: true,
			Key: []byte("k" + strconv.Itoa(int(part))), Value: []byte(strconv.Itoa(i))})
		return err
	}
	for part := range int32(2) {
		if err := send(part, 0); err != nil {
			t.Fatal(err)
		}
	}
	c.Fake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "nobump", Partitions: []int32{0}, Err: kerr.UnknownProducerID})
	start := time.Now()
	err := send(0, 1)
	took := time.Since(start)
	if !errors.Is(err, kpush.ErrDeliveryTimeout) {
		t.Fatalf("held record: %v, want ErrDeliveryTimeout", err)
	}
	if errors.Is(err, kpush.ErrOutcomeUnknown) {
		t.Errorf("held record ended outcome unknown (%v); it was refused and never sent again", err)
	}
	if !errors.Is(err, kerr.CoordinatorNotAvailable) {
		t.Errorf("held record: %v, want the failing bump's error as its cause", err)
	}
	if err := send(1, 1); err != nil {
		t.Errorf("partition 1 with partition 0's bump failing: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	// The refresher paces attempts: after j failures in a row it waits at
	// least MinInterval·2^j (here the 5ms retry backoff) with -20% jitter,
	// capped at 1s, since the previous refresh ended. Lower bounds only: a
	// slow machine makes the gaps longer, never shorter. Without the
	// backoff the bump was retried every ~5ms (hundreds in 2s).
	t.Logf("%d failed bump attempts in %v", len(inits), took)
	if len(inits) < 2 {
		t.Fatalf("%d failed bump attempts in %v; want it retried", len(inits), took)
	}
	for j := 0; j+1 < len(inits); j++ {
		want := time.Duration(0.75 * float64(min(5*time.Millisecond<<(j+1), time.Second)))
		if gap := inits[j+1].Sub(inits[j]); gap < want {
			t.Fatalf("failed InitProducerID attempt %d came %v after the previous one, want ≥ %v (growing backoff); %d attempts in %v", j+2, gap, want, len(inits), took)
		}
	}
}

// TestEngine_BumpAnsweredWithSameIDGetsFreshID: a broker that answers the
// bump's InitProducerID with the producer ID and epoch it was given would
// leave the faulted partition waiting for a new epoch until its records
// expire; kpush then asks for a fresh producer ID, and the record is
// acknowledged under it from sequence 0.
func TestEngine_BumpAnsweredWithSameIDGetsFreshID(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("sameid", 1))
	p := newProducer(t, c, kpush.WithRetryBackoff(5*time.Millisecond),
		kpush.WithRequestTimeout(time.Second), kpush.WithDeliveryTimeout(5*time.Second))
	ctx := testCtx(t)
	var (
		mu   sync.Mutex
		log  []producedBatch
		next int64 = 100 // the next fresh producer ID handed out
	)
	logProduce(c, "sameid", &mu, &log)
	c.Fake().ControlKey(int16(kmsg.InitProducerID), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake().KeepControl()
		r := req.(*kmsg.InitProducerIDRequest)
		resp := r.ResponseKind().(*kmsg.InitProducerIDResponse)
		if r.ProducerID >= 0 {
			resp.ProducerID, resp.ProducerEpoch = r.ProducerID, r.ProducerEpoch // a "bump" that changes nothing
			return resp, nil, true
		}
		mu.Lock()
		resp.ProducerID = next
		next++
		mu.Unlock()
		return resp, nil, true
	})
	send := func(i int) error {
		_, err := p.Send(ctx, &kpush.Record{Topic: "sameid", Key: []byte("k0"), Value: []byte(strconv.Itoa(i))})
		return err
	}
	for i := range 3 {
		if err := send(i); err != nil {
			t.Fatal(err)
		}
	}
	c.Fake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "sameid", Err: kerr.UnknownProducerID})
	if err := send(3); err != nil {
		t.Fatalf("record after the fault: %v", err)
	}
	checkExactlyOnceInOrder(t, ctx, c, "sameid", 1, 4)
	mu.Lock()
	defer mu.Unlock()
	if last := log[len(log)-1]; last.id != 101 || last.seq != 0 {
		t.Errorf("record after the fault sent as producer %d seq %d, want the fresh ID 101 at seq 0", last.id, last.seq)
	}
}
