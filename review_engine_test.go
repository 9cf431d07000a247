package kpush

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kpush/kpush/kafkatest"
)

// TestLoadCounters_AbandonRacesResponse: a Send whose ctx ends while its
// request is in flight, with the response arriving at the same moment.
// The abandoned record's Notify still runs on the reader goroutine, so the
// load counter must be taken off by one side only: when both cancelWait
// and Notify did it, the race detector reported the unsynchronized
// w.load accesses, and an overlap subtracted the record's bytes twice
// (a negative load makes a partition look idle). Run it with -race.
func TestLoadCounters_AbandonRacesResponse(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("ar", 1))
	setHold, arrived := holdProduces(c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := New(WithBrokers(c.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	if _, err := p.Send(ctx, &Record{Topic: "ar", Value: []byte("warmup")}); err != nil {
		t.Fatal(err)
	}

	abandoned := 0
	for i := 0; i < 20; i++ {
		release := make(chan struct{})
		setHold(release)
		actx, acancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() {
			_, err := p.Send(actx, &Record{Topic: "ar", Value: []byte("abandon or not")})
			errc <- err
		}()
		select {
		case <-arrived:
		case <-ctx.Done():
			t.Fatal("the held request never arrived")
		}
		setHold(nil)
		// The Send gives up while the response is on its way: either may
		// win, and no happens-before edge links the two sides.
		acancel()
		close(release)
		switch err := <-errc; {
		case err == nil:
		case errors.Is(err, ErrOutcomeUnknown) && errors.Is(err, context.Canceled):
			abandoned++
		default:
			t.Fatalf("Send: %v, want success or ErrOutcomeUnknown", err)
		}
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		wantNoLoad(t, p, "ar", "after a Send abandoned as its response arrived")
	}
	t.Logf("%d of 20 Sends abandoned", abandoned)
}
