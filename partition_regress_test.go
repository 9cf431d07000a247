package kpush_test

// End-to-end regressions for the partition state machine (issue 11),
// against the fake cluster.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// Defect 2: Sends whose ctx ends while their partition is stuck must not
// let the producer hold more than WithMaxBufferedBytes, and Stats must
// count what is held. Before the fix a canceled Send released its space
// at once while its record stayed queued in the partition.
func TestSend_CanceledRecordsStayWithinMemoryBound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	f := c.Fake()
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		select {
		case arrived <- struct{}{}:
		default:
		}
		<-release // every produce request is held: the partition is stuck
		return nil, nil, false
	})
	defer close(release) // before the cluster's Close (a t.Cleanup)
	const bound = 32 << 10
	p := newProducer(t, c, kpush.WithMaxBufferedBytes(bound))
	held := make(chan error, 1)
	p.SendAsync(ctx, &kpush.Record{Topic: "t", Value: []byte("in flight")}, func(_ kpush.Result, err error) { held <- err })
	select {
	case <-arrived: // the first batch is in flight; until it is acknowledged nothing else is sent
	case <-ctx.Done():
		t.Fatal("no produce request arrived")
	}

	value := make([]byte, 100)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var maxHeld int64
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				sctx, scancel := context.WithTimeout(ctx, 5*time.Millisecond)
				_, err := p.Send(sctx, &kpush.Record{Topic: "t", Value: value})
				scancel()
				if !errors.Is(err, kpush.ErrNotWritten) || !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Send: %v, want ErrNotWritten wrapping DeadlineExceeded", err)
					return
				}
				h := p.HeldBytes()
				mu.Lock()
				maxHeld = max(maxHeld, h)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if maxHeld > bound {
		t.Errorf("partitions held %d bytes of canceled records, WithMaxBufferedBytes is %d", maxHeld, bound)
	}
	if h, st := p.HeldBytes(), p.Stats().BytesBuffered; h > st {
		t.Errorf("Stats().BytesBuffered = %d, but %d bytes are held", st, h)
	}
}

// Defect 9: one ProduceRequest never carries more than WithMaxRequestBytes
// of batches (a broker closes the connection of a request above its
// socket.request.max.bytes); the partitions that do not fit go in the next
// request.
func TestProduce_RequestSizeCapped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const parts, perPart, limit = 8, 40, 40 << 10
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", parts))
	p := newProducer(t, c, kpush.WithPartitioner(kpush.ManualPartitioner), kpush.WithMaxInflight(1),
		kpush.WithMaxBatchBytes(16<<10), kpush.WithMaxRequestBytes(limit))
	for i := range parts { // warm up: metadata, producer ID, every partition acknowledged
		if _, err := p.Send(ctx, &kpush.Record{Topic: "t", Partition: int32(i), Value: []byte("warm")}); err != nil {
			t.Fatal(err)
		}
	}

	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) }) // before the cluster's Close (a t.Cleanup)
	arrived := make(chan struct{}, 1)
	var mu sync.Mutex
	largest := 0
	f := c.Fake()
	f.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		n := 0
		for _, tp := range req.(*kmsg.ProduceRequest).Topics {
			for _, pp := range tp.Partitions {
				n += len(pp.Records)
			}
		}
		mu.Lock()
		largest = max(largest, n)
		mu.Unlock()
		select {
		case arrived <- struct{}{}:
		default:
		}
		<-release // the first request is held while every partition fills up
		return nil, nil, false
	})

	errs := make(chan error, 1+parts*perPart)
	cb := func(_ kpush.Result, err error) { errs <- err }
	p.SendAsync(ctx, &kpush.Record{Topic: "t", Value: []byte("held")}, cb)
	select {
	case <-arrived:
	case <-ctx.Done():
		t.Fatal("no produce request arrived")
	}
	value := make([]byte, 1000)
	for i := range parts * perPart {
		p.SendAsync(ctx, &kpush.Record{Topic: "t", Partition: int32(i % parts), Value: value}, cb)
	}
	releaseOnce.Do(func() { close(release) })
	for range 1 + parts*perPart {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatalf("record failed: %v", err)
			}
		case <-ctx.Done():
			t.Fatal("outcomes missing")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if largest > limit {
		t.Errorf("a produce request carried %d bytes of batches, WithMaxRequestBytes is %d", largest, limit)
	}
}

// Defect 1: NOT_ENOUGH_REPLICAS for longer than the delivery timeout, then
// the broker recovers: records sent after the recovery must be written.
// Before the fix a retry that expired in drain (nothing in flight) left the
// partition queued with its sink asleep, and every later record of the
// partition ended in ErrDeliveryTimeout. Several partitions make the
// interleaving (drain, not the reaper, expiring the retry) near certain.
func TestSend_RecoversAfterFaultLongerThanDeliveryTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const parts = 8
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", parts))
	var fault atomic.Bool
	fault.Store(true)
	f := c.Fake()
	f.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		if !fault.Load() {
			return nil, nil, false
		}
		req := r.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		resp.Version = req.Version
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.NotEnoughReplicas.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	p := newProducer(t, c, kpush.WithPartitioner(kpush.ManualPartitioner),
		kpush.WithRequestTimeout(500*time.Millisecond), kpush.WithDeliveryTimeout(time.Second),
		kpush.WithRetryBackoff(30*time.Millisecond))
	send := func(phase string, want error) {
		var wg sync.WaitGroup
		for i := range parts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := p.Send(ctx, &kpush.Record{Topic: "t", Partition: int32(i), Value: []byte(phase)})
				if (want == nil) != (err == nil) || (want != nil && !errors.Is(err, want)) {
					t.Errorf("%s: partition %d: %v, want %v", phase, i, err, want)
				}
			}()
		}
		wg.Wait()
	}
	send("during the fault", kpush.ErrDeliveryTimeout)
	fault.Store(false)
	send("after the fault", nil)
	if t.Failed() {
		t.Log(p.DebugPartitions())
	}
}

// Defect 10: a Produce v8+ answer of INVALID_RECORD naming one record of a
// batch (KIP-467) fails that record only; the other records of the batch,
// other goroutines' records, are written.
func TestSend_RecordErrorsFailOnlyNamedRecord(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 1))
	p := newProducer(t, c, kpush.WithMaxInflight(1)) // the three records queue behind the held request
	if _, err := p.Send(ctx, &kpush.Record{Topic: "t", Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}

	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) }) // before the cluster's Close (a t.Cleanup)
	arrived := make(chan struct{}, 1)
	var calls atomic.Int32
	f := c.Fake()
	f.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		switch calls.Add(1) {
		case 1: // hold the first request while three records queue behind it
			arrived <- struct{}{}
			<-release
		case 2: // the three records' batch: the broker refuses the second one
			req := r.(*kmsg.ProduceRequest)
			resp := req.ResponseKind().(*kmsg.ProduceResponse)
			resp.Version = req.Version
			st := kmsg.NewProduceResponseTopic()
			st.Topic = "t"
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.ErrorCode = kerr.InvalidRecord.Code
			msg := "bad record"
			er := kmsg.NewProduceResponseTopicPartitionErrorRecord()
			er.RelativeOffset, er.ErrorMessage = 1, &msg
			sp.ErrorRecords = append(sp.ErrorRecords, er)
			st.Partitions = append(st.Partitions, sp)
			resp.Topics = append(resp.Topics, st)
			return resp, nil, true
		}
		return nil, nil, false
	})
	type outcome struct {
		i   int
		err error
	}
	outs := make(chan outcome, 4)
	p.SendAsync(ctx, &kpush.Record{Topic: "t", Value: []byte("held")}, func(_ kpush.Result, err error) { outs <- outcome{-1, err} })
	select {
	case <-arrived:
	case <-ctx.Done():
		t.Fatal("no produce request arrived")
	}
	for i := range 3 {
		p.SendAsync(ctx, &kpush.Record{Topic: "t", Value: []byte{'a' + byte(i)}}, func(_ kpush.Result, err error) { outs <- outcome{i, err} })
	}
	releaseOnce.Do(func() { close(release) })
	for range 4 {
		var o outcome
		select {
		case o = <-outs:
		case <-ctx.Done():
			t.Fatal("outcomes missing")
		}
		switch {
		case o.i == 1 && !(errors.Is(o.err, kpush.ErrInvalidRecord) && errors.Is(o.err, kpush.ErrNotWritten)):
			t.Errorf("named record: %v, want ErrInvalidRecord, not written", o.err)
		case o.i != 1 && o.err != nil:
			t.Errorf("record %d, not named by the broker: %v", o.i, o.err)
		}
	}
	recs, err := c.ReadAll(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, string(r.Value))
	}
	if want := "[warm held a c]"; fmt.Sprint(got) != want {
		t.Errorf("log holds %v, want %s", got, want)
	}
}

// Defect 4: partition 1's OUT_OF_ORDER_SEQUENCE_NUMBER bumps the producer
// ID while partition 0 waits to retry a batch whose outcome is unknown
// (REQUEST_TIMED_OUT). Partition 0's retry goes out under the old ID,
// whose state the broker still holds there, and is written; before the fix
// it failed with ErrSequenceReset though it was never in the log.
func TestSend_OtherPartitionsBumpDoesNotResetRetry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("t", 2))
	p := newProducer(t, c, kpush.WithPartitioner(kpush.ManualPartitioner), kpush.WithMaxInflight(1),
		kpush.WithRetryBackoff(20*time.Millisecond))
	for i := range 2 {
		if _, err := p.Send(ctx, &kpush.Record{Topic: "t", Partition: int32(i), Value: []byte("warm")}); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) }) // before the cluster's Close (a t.Cleanup)
	arrived := make(chan struct{}, 1)
	var calls, inits atomic.Int32
	f := c.Fake()
	f.ControlKey(int16(kmsg.InitProducerID), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		inits.Add(1)
		return nil, nil, false
	})
	f.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		n := calls.Add(1)
		if n == 1 { // hold the first request while both partitions queue a record
			arrived <- struct{}{}
			<-release
			return nil, nil, false
		}
		if n == 2 || inits.Load() == 0 {
			// Both records: partition 0 maybe written, partition 1 out of
			// order; then their retries are refused (not written) until
			// the epoch bump has happened.
			codes := map[int32]int16{0: kerr.RequestTimedOut.Code, 1: kerr.OutOfOrderSequenceNumber.Code}
			if n > 2 {
				codes = map[int32]int16{0: kerr.NotEnoughReplicas.Code, 1: kerr.NotEnoughReplicas.Code}
			}
			req := r.(*kmsg.ProduceRequest)
			resp := req.ResponseKind().(*kmsg.ProduceResponse)
			resp.Version = req.Version
			for _, rt := range req.Topics {
				st := kmsg.NewProduceResponseTopic()
				st.Topic = rt.Topic
				for _, rp := range rt.Partitions {
					sp := kmsg.NewProduceResponseTopicPartition()
					sp.Partition = rp.Partition
					sp.ErrorCode = codes[rp.Partition]
					st.Partitions = append(st.Partitions, sp)
				}
				resp.Topics = append(resp.Topics, st)
			}
			return resp, nil, true
		}
		return nil, nil, false
	})
	type outcome struct {
		part int32
		err  error
	}
	outs := make(chan outcome, 3)
	send := func(part int32, v string) {
		p.SendAsync(ctx, &kpush.Record{Topic: "t", Partition: part, Value: []byte(v)}, func(_ kpush.Result, err error) { outs <- outcome{part, err} })
	}
	send(0, "held")
	select {
	case <-arrived:
	case <-ctx.Done():
		t.Fatal("no produce request arrived")
	}
	send(0, "a")
	send(1, "b")
	releaseOnce.Do(func() { close(release) })
	for range 3 {
		select {
		case o := <-outs:
			if o.err != nil {
				t.Errorf("partition %d: %v", o.part, o.err)
			}
		case <-ctx.Done():
			t.Fatal("outcomes missing")
		}
	}
	if inits.Load() == 0 {
		t.Errorf("no epoch bump: the test did not exercise the case (%d produce requests)\n%s", calls.Load(), p.DebugPartitions())
	}
}

// A batch limit above the default request cap raises the cap when
// WithMaxRequestBytes is not given (the CLI's -X batch.size goes to 1 GiB).
func TestNew_LargeBatchRaisesDefaultRequestCap(t *testing.T) {
	p, err := kpush.New(kpush.WithBrokers("127.0.0.1:1"), kpush.WithMaxBatchBytes(64<<20))
	if err != nil {
		t.Fatal(err)
	}
	p.Close(context.Background())
}
