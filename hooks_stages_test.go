package kpush_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// doneHook keeps the OnRecordDone events, by record value.
type doneHook struct {
	mu   sync.Mutex
	done map[string]kpush.RecordDoneEvent
}

func (h *doneHook) OnRecordDone(ev kpush.RecordDoneEvent) {
	h.mu.Lock()
	h.done[string(ev.Record.Value)] = ev
	h.mu.Unlock()
}

func (h *doneHook) get(t *testing.T, value string) kpush.RecordDoneEvent {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	ev, ok := h.done[value]
	if !ok {
		t.Fatalf("no OnRecordDone for %q", value)
	}
	return ev
}

// checkStages: the four stages are non-negative (they follow one
// another) and add up to Elapsed, to the nanosecond.
func checkStages(t *testing.T, name string, ev kpush.RecordDoneEvent) {
	t.Helper()
	st := ev.Stages
	if !ev.Answered {
		t.Fatalf("%s: Answered false for a record the broker answered (err %v)", name, ev.Err)
	}
	if st.Buffer < 0 || st.Queue < 0 || st.InFlight < 0 || st.Deliver < 0 {
		t.Errorf("%s: a negative stage (out of order): %+v", name, st)
	}
	if sum := st.Buffer + st.Queue + st.InFlight + st.Deliver; sum != ev.Elapsed {
		t.Errorf("%s: stages %+v add up to %v, Elapsed is %v", name, st, sum, ev.Elapsed)
	}
}

// TestHooks_RecordStages: RecordDoneEvent.Stages are measured on each
// record. The fake broker holds every produce request for brokerDelay
// before answering, WithLinger holds every batch, and the first async
// record's callback sleeps: each delay shows up in its own stage of the
// records it delays (lower bounds only, so a slow machine cannot fail
// it), and the stages add up to Elapsed.
func TestHooks_RecordStages(t *testing.T) {
	const (
		brokerDelay = 60 * time.Millisecond
		linger      = 40 * time.Millisecond
		cbDelay     = 50 * time.Millisecond
	)
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("st", 1))
	f := c.Fake()
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		c.SleepControl(func() { time.Sleep(brokerDelay) })
		return nil, nil, false
	})
	h := &doneHook{done: map[string]kpush.RecordDoneEvent{}}
	p := newProducer(t, c, kpush.WithHooks(h), kpush.WithLinger(linger))
	ctx := testCtx(t)

	// One Send at a time: each record is alone in its batch, so it lingers
	// for the whole linger from its Enqueued time (which is before its
	// OnRecordBuffered, within Buffer).
	for _, v := range []string{"s0", "s1", "s2"} {
		t0 := time.Now()
		if _, err := p.Send(ctx, &kpush.Record{Topic: "st", Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
		took := time.Since(t0)
		ev := h.get(t, v)
		checkStages(t, v, ev)
		if st := ev.Stages; st.Buffer+st.Queue < linger {
			t.Errorf("%s: Buffer+Queue = %v, want at least the linger %v", v, st.Buffer+st.Queue, linger)
		}
		if ev.Stages.InFlight < brokerDelay {
			t.Errorf("%s: InFlight = %v, want at least the broker's delay %v", v, ev.Stages.InFlight, brokerDelay)
		}
		if ev.Elapsed > took {
			t.Errorf("%s: Elapsed %v is longer than Send took (%v)", v, ev.Elapsed, took)
		}
	}

	// Async records in one batch: their callbacks run in order, the first
	// one sleeps, so every later record waits for it in Deliver.
	const n = 8
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		v := []byte{'a', byte('0' + i)}
		p.SendAsync(ctx, &kpush.Record{Topic: "st", Value: v}, func(_ kpush.Result, err error) {
			defer wg.Done()
			if err != nil {
				t.Error(err)
			}
			if i == 0 {
				time.Sleep(cbDelay)
			}
		})
	}
	wg.Wait()
	for i := range n {
		v := string([]byte{'a', byte('0' + i)})
		ev := h.get(t, v)
		checkStages(t, v, ev)
		if ev.Stages.InFlight < brokerDelay {
			t.Errorf("%s: InFlight = %v, want at least %v", v, ev.Stages.InFlight, brokerDelay)
		}
		if i > 0 && ev.Stages.Deliver < cbDelay {
			t.Errorf("%s: Deliver = %v, want at least the first callback's %v", v, ev.Stages.Deliver, cbDelay)
		}
	}

	// SendCancelable's outcome carries its stages too.
	cdone := make(chan error, 1)
	p.SendCancelable(ctx, &kpush.Record{Topic: "st", Value: []byte("c0")}, func(_ kpush.Result, err error) { cdone <- err })
	if err := <-cdone; err != nil {
		t.Fatal(err)
	}
	if ev := h.get(t, "c0"); ev.Stages.InFlight < brokerDelay {
		t.Errorf("c0: InFlight = %v, want at least %v", ev.Stages.InFlight, brokerDelay)
	} else {
		checkStages(t, "c0", ev)
	}

	// A record that fails before it is sent has no stages.
	if _, err := p.Send(ctx, &kpush.Record{Topic: "st", Value: []byte("bad"), Timestamp: time.UnixMilli(-5)}); err == nil {
		t.Fatal("a negative timestamp was accepted")
	}
	if ev := h.get(t, "bad"); ev.Answered || ev.Stages != (kpush.RecordStages{}) {
		t.Errorf("a record refused before buffering has Answered %v, Stages %+v", ev.Answered, ev.Stages)
	}
}

// TestHooks_RecordStagesExpired: a record whose delivery timeout ends it
// in flight was not ended by an answer: no stages, and the late answer
// writes none into the (possibly reused) record.
func TestHooks_RecordStagesExpired(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("sx", 1))
	f := c.Fake()
	release := make(chan struct{})
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		c.SleepControl(func() { <-release })
		return nil, nil, false
	})
	h := &doneHook{done: map[string]kpush.RecordDoneEvent{}}
	p := newProducer(t, c, kpush.WithHooks(h), kpush.WithDeliveryTimeout(400*time.Millisecond),
		kpush.WithRequestTimeout(300*time.Millisecond))
	_, err := p.Send(testCtx(t), &kpush.Record{Topic: "sx", Value: []byte("x")})
	close(release)
	if kpush.OutcomeOf(err) != kpush.OutcomeUnknown {
		t.Fatalf("Send = %v, want an unknown outcome (delivery timeout in flight)", err)
	}
	if ev := h.get(t, "x"); ev.Answered || ev.Stages != (kpush.RecordStages{}) {
		t.Errorf("a record expired in flight has Answered %v, Stages %+v", ev.Answered, ev.Stages)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestHooks_RecordStagesBufferWaits: what delays a record before it is
// buffered counts in its Buffer stage, not in Queue: waiting for buffer
// space (WithMaxBufferedRecords(1) while the broker holds the first
// record) and a slow custom partitioner.
func TestHooks_RecordStagesBufferWaits(t *testing.T) {
	const (
		brokerDelay = 80 * time.Millisecond
		pickDelay   = 40 * time.Millisecond
	)
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("sb", 1))
	f := c.Fake()
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		f.SleepControl(func() { time.Sleep(brokerDelay) })
		return nil, nil, false
	})
	h := &doneHook{done: map[string]kpush.RecordDoneEvent{}}
	ctx := testCtx(t)

	p := newProducer(t, c, kpush.WithHooks(h), kpush.WithMaxBufferedRecords(1))
	if _, err := p.Send(ctx, &kpush.Record{Topic: "sb", Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	p.SendAsync(ctx, &kpush.Record{Topic: "sb", Value: []byte("first")}, func(_ kpush.Result, err error) { first <- err })
	if _, err := p.Send(ctx, &kpush.Record{Topic: "sb", Value: []byte("waits")}); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	ev := h.get(t, "waits")
	checkStages(t, "waits", ev)
	if ev.Stages.Buffer < brokerDelay/2 {
		t.Errorf("a record that waited for buffer space behind a %v answer has Buffer %v (Queue %v)", brokerDelay, ev.Stages.Buffer, ev.Stages.Queue)
	}

	slow := kpush.PartitionerFunc(func(string, *kpush.Record, int) int {
		time.Sleep(pickDelay)
		return 0
	})
	q := newProducer(t, c, kpush.WithHooks(h), kpush.WithPartitioner(slow))
	for _, v := range []string{"warm2", "picked"} { // the first waits for metadata too
		if _, err := q.Send(ctx, &kpush.Record{Topic: "sb", Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
	ev = h.get(t, "picked")
	checkStages(t, "picked", ev)
	if ev.Stages.Buffer < pickDelay {
		t.Errorf("a record whose partitioner took %v has Buffer %v (Queue %v)", pickDelay, ev.Stages.Buffer, ev.Stages.Queue)
	}
}
