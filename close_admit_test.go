package kpush_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestClose_SendAdmittedDuringCloseIsNotWritten: a Send that passed the
// closed check before Close began, but counts its record for Flush/Close
// only after Close sealed what it waits for, must fail ErrClosed (not
// written): Close does not wait for it, so if it were queued it could be in
// flight when Close stops the sinks and end unknown (the rare
// "unexpected error" of TestReliability/13a). A custom partitioner (user
// code, between the two) holds the Send there while Close starts.
func TestClose_SendAdmittedDuringCloseIsNotWritten(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("ca", 1))
	entered, goOn := make(chan struct{}), make(chan struct{})
	part := kpush.PartitionerFunc(func(_ string, r *kpush.Record, _ int) int {
		if string(r.Key) == "late" {
			close(entered)
			<-goOn
		}
		return 0
	})
	p := newProducer(t, c, kpush.WithPartitioner(part))
	ctx := testCtx(t)
	if _, err := p.Send(ctx, &kpush.Record{Topic: "ca", Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	f := c.Fake()
	held, written := make(chan struct{}), make(chan struct{}, 16)
	f.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.KeepControl()
		written <- struct{}{}
		c.SleepControl(func() { <-held })
		return nil, nil, false
	})
	released := false
	release := func() {
		if !released {
			released = true
			close(held)
		}
	}
	t.Cleanup(release)
	done := make(chan error, 2)
	p.SendAsync(ctx, &kpush.Record{Topic: "ca", Value: []byte("a")}, func(_ kpush.Result, err error) { done <- err })
	<-written // A is in flight: Close waits for it
	late := make(chan error, 1)
	go func() {
		p.SendAsync(ctx, &kpush.Record{Topic: "ca", Key: []byte("late"), Value: []byte("b")},
			func(_ kpush.Result, err error) { late <- err })
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- p.Close(context.Background()) }()
	// Wait until Close has begun: a Send with a canceled ctx then fails
	// ErrClosed (checked before ctx) and queues nothing.
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		_, err := p.Send(gone, &kpush.Record{Topic: "ca", Value: []byte("probe")})
		if errors.Is(err, kpush.ErrClosed) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(goOn)
	select {
	case err := <-late:
		if !errors.Is(err, kpush.ErrClosed) || !errors.Is(err, kpush.ErrNotWritten) {
			t.Errorf("Send admitted during Close: %v, want ErrClosed, not written", err)
		}
	case <-written:
		t.Error("a record accepted after Close began was written")
	}
	release()
	if err := <-done; err != nil {
		t.Errorf("A: %v", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}
