package wire_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/internal/wire"
)

// waitTimeout bounds every wait in these tests; nothing should come close.
const waitTimeout = 5 * time.Second

func newCluster(t *testing.T) (*kfake.Cluster, string) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()[0]
}

// dial dials addr and registers a cleanup that closes the Conn and checks
// that its reader goroutine exited.
func dial(t *testing.T, addr string, cfg *wire.Config) *wire.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := wire.Dial(ctx, addr, cfg)
	if err != nil {
		t.Fatalf("Dial(%s): %v", addr, err)
	}
	t.Cleanup(func() {
		closeConn(t, c)
		requireClosed(t, c.Done(), "Done after Close")
	})
	return c
}

func closeConn(t *testing.T, c *wire.Conn) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	if err := recv(t, done, "Close"); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func requireClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	recv(t, ch, what)
}

func metadataReq(topics ...string) *kmsg.MetadataRequest {
	req := kmsg.NewPtrMetadataRequest()
	for _, topic := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
	}
	return req
}

// result is what a done callback received, and how many times it ran.
type result struct {
	resp  kmsg.Response
	err   error
	calls atomic.Int32
	ch    chan struct{} // closed on the first call
}

func newResult() *result { return &result{ch: make(chan struct{})} }

func (r *result) done(resp kmsg.Response, err error) {
	if r.calls.Add(1) == 1 {
		r.resp, r.err = resp, err
		close(r.ch)
	}
}

// wait waits for the first call and returns what it received.
func (r *result) wait(t *testing.T, what string) (kmsg.Response, error) {
	t.Helper()
	requireClosed(t, r.ch, what)
	return r.resp, r.err
}

// blockKey makes the broker hold every request of key until the test ends;
// it reports each held request on the returned channel.
func blockKey(t *testing.T, c *kfake.Cluster, key kmsg.Key) <-chan kmsg.Request {
	release := make(chan struct{})
	held := make(chan kmsg.Request, 100)
	c.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		select {
		case held <- req:
		default:
		}
		c.SleepControl(func() { <-release })
		return nil, nil, false
	})
	t.Cleanup(func() { close(release) }) // runs before the cluster's Close
	return held
}

func TestDial_NegotiatesVersions(t *testing.T) {
	_, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{ClientID: "kpush-test"})
	if c.Addr() != addr {
		t.Errorf("Addr() = %q, want %q", c.Addr(), addr)
	}
	for _, key := range []kmsg.Key{kmsg.Produce, kmsg.Metadata, kmsg.ApiVersions, kmsg.InitProducerID} {
		if v := c.Version(int16(key)); v <= 0 {
			t.Errorf("Version(%s) = %d, want > 0", key.Name(), v)
		}
	}
	if v, max := c.Version(int16(kmsg.Produce)), (&kmsg.ProduceRequest{}).MaxVersion(); v > max {
		t.Errorf("Version(Produce) = %d, above kmsg's maximum %d", v, max)
	}
	for _, key := range []int16{-1, 9999, int16(kmsg.MaxKey) + 1} {
		if v := c.Version(key); v != -1 {
			t.Errorf("Version(%d) = %d, want -1", key, v)
		}
	}
	if err := c.Err(); err != nil {
		t.Errorf("Err() on a live connection = %v", err)
	}
	select {
	case <-c.Done():
		t.Error("Done() closed on a live connection")
	default:
	}
}

func TestDial_MaxVersionsCap(t *testing.T) {
	_, addr := newCluster(t)
	uncapped := dial(t, addr, &wire.Config{})
	tests := []struct {
		name string
		caps map[int16]int16
		key  kmsg.Key
		want int16
	}{
		{name: "produce capped at 7", caps: map[int16]int16{int16(kmsg.Produce): 7}, key: kmsg.Produce, want: 7},
		{name: "metadata capped at 1", caps: map[int16]int16{int16(kmsg.Metadata): 1}, key: kmsg.Metadata, want: 1},
		{name: "negative cap ignored", caps: map[int16]int16{int16(kmsg.Produce): -1}, key: kmsg.Produce, want: uncapped.Version(int16(kmsg.Produce))},
		{name: "cap above broker max ignored", caps: map[int16]int16{int16(kmsg.Produce): 1000}, key: kmsg.Produce, want: uncapped.Version(int16(kmsg.Produce))},
		{name: "other keys untouched", caps: map[int16]int16{int16(kmsg.Produce): 7}, key: kmsg.Metadata, want: uncapped.Version(int16(kmsg.Metadata))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr, &wire.Config{MaxVersions: tt.caps})
			if v := c.Version(int16(tt.key)); v != tt.want {
				t.Fatalf("Version(%s) = %d, want %d", tt.key.Name(), v, tt.want)
			}
		})
	}
}

func TestDo_UsesCappedVersion(t *testing.T) {
	cl, addr := newCluster(t)
	seen := make(chan int16, 1)
	cl.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
		seen <- req.GetVersion()
		return nil, nil, false
	})
	c := dial(t, addr, &wire.Config{MaxVersions: map[int16]int16{int16(kmsg.Metadata): 4}})
	resp, err := c.Request(context.Background(), metadataReq("t"))
	if err != nil {
		t.Fatal(err)
	}
	if v := recv(t, seen, "broker saw Metadata"); v != 4 {
		t.Errorf("broker saw Metadata v%d, want v4", v)
	}
	if v := resp.GetVersion(); v != 4 {
		t.Errorf("response decoded as v%d, want v4", v)
	}
}

func TestRequest_Metadata(t *testing.T) {
	_, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := c.Request(ctx, metadataReq("t"))
	if err != nil {
		t.Fatal(err)
	}
	mr, ok := resp.(*kmsg.MetadataResponse)
	if !ok {
		t.Fatalf("response is %T, want *kmsg.MetadataResponse", resp)
	}
	if len(mr.Brokers) != 1 {
		t.Errorf("%d brokers, want 1", len(mr.Brokers))
	}
	if len(mr.Topics) != 1 || mr.Topics[0].Topic == nil || *mr.Topics[0].Topic != "t" {
		t.Fatalf("topics = %+v, want just t", mr.Topics)
	}
	if tp := mr.Topics[0]; tp.ErrorCode != 0 || len(tp.Partitions) != 1 {
		t.Errorf("topic t: error code %d, %d partitions; want 0, 1", tp.ErrorCode, len(tp.Partitions))
	}
}

func TestRequest_ContextCancel(t *testing.T) {
	cl, addr := newCluster(t)
	held := blockKey(t, cl, kmsg.Metadata)
	c := dial(t, addr, &wire.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Request(ctx, metadataReq("t"))
		errc <- err
	}()
	recv(t, held, "broker holding Metadata")
	cancel()
	if err := recv(t, errc, "Request after cancel"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Request = %v, want context.Canceled", err)
	}
}

func TestDo_Pipelined(t *testing.T) {
	const (
		goroutines = 8
		perG       = 25
	)
	_, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{})
	results := make([]*result, goroutines*perG)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				r := newResult()
				results[g*perG+i] = r
				if err := c.Do(metadataReq(fmt.Sprintf("topic-%d-%d", g, i)), false, r.done); err != nil {
					t.Errorf("Do: %v", err)
					close(r.ch)
				}
			}
		})
	}
	wg.Wait()
	for idx, r := range results {
		want := fmt.Sprintf("topic-%d-%d", idx/perG, idx%perG)
		resp, err := r.wait(t, want)
		if err != nil {
			t.Fatalf("%s: %v", want, err)
		}
		mr := resp.(*kmsg.MetadataResponse)
		if len(mr.Topics) != 1 || mr.Topics[0].Topic == nil || *mr.Topics[0].Topic != want {
			t.Fatalf("response for %s names %+v", want, mr.Topics)
		}
	}
	// Close completes nothing twice: every call already ran once.
	closeConn(t, c)
	for idx, r := range results {
		if n := r.calls.Load(); n != 1 {
			t.Errorf("call %d: done ran %d times, want 1", idx, n)
		}
	}
}

func TestDo_NoResponse(t *testing.T) {
	_, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{})
	req := kmsg.NewPtrProduceRequest()
	req.Acks = 0
	req.TimeoutMillis = 1000
	var calls int
	var gotErr error
	if err := c.Do(req, true, func(resp kmsg.Response, err error) { calls++; gotErr = err }); err != nil {
		t.Fatal(err)
	}
	// done runs on the calling goroutine before Do returns.
	if calls != 1 || gotErr != nil {
		t.Fatalf("done ran %d times with %v, want once with nil", calls, gotErr)
	}
	// The connection stays usable: no response is expected for acks=0.
	if _, err := c.Request(context.Background(), metadataReq("t")); err != nil {
		t.Fatalf("Metadata after acks=0 produce: %v", err)
	}
}

func TestDo_Unsupported(t *testing.T) {
	_, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{})
	req := kmsg.NewPtrLeaderAndISRRequest() // inter-broker only: never advertised
	if v := c.Version(req.Key()); v != -1 {
		t.Skipf("broker advertises LeaderAndISR v%d", v)
	}
	called := false
	err := c.Do(req, false, func(kmsg.Response, error) { called = true })
	if !errors.Is(err, wire.ErrUnsupported) {
		t.Fatalf("Do = %v, want ErrUnsupported", err)
	}
	if called {
		t.Fatal("done ran for a request that was never written")
	}
	// The connection is still alive.
	if _, err := c.Request(context.Background(), metadataReq("t")); err != nil {
		t.Fatal(err)
	}
}

func TestDo_RequestTimeout(t *testing.T) {
	cl, addr := newCluster(t)
	held := blockKey(t, cl, kmsg.Metadata)
	c := dial(t, addr, &wire.Config{RequestTimeout: 200 * time.Millisecond})

	r := newResult()
	start := time.Now()
	if err := c.Do(metadataReq("t"), false, r.done); err != nil {
		t.Fatal(err)
	}
	recv(t, held, "broker holding Metadata")
	_, err := r.wait(t, "timed-out call")
	if !errors.Is(err, wire.ErrMaybeDelivered) || !errors.Is(err, wire.ErrRequestTimeout) {
		t.Fatalf("done error = %v, want ErrMaybeDelivered and ErrRequestTimeout", err)
	}
	if elapsed := time.Since(start); elapsed < 150*time.Millisecond {
		t.Errorf("timed out after %v, before the 200ms request timeout", elapsed)
	}
	requireClosed(t, c.Done(), "Done after timeout")
	if err := c.Err(); !errors.Is(err, wire.ErrRequestTimeout) {
		t.Errorf("Err() = %v, want ErrRequestTimeout", err)
	}

	called := false
	err = c.Do(metadataReq("t"), false, func(kmsg.Response, error) { called = true })
	if !errors.Is(err, wire.ErrConnClosed) {
		t.Fatalf("Do on a dead conn = %v, want ErrConnClosed", err)
	}
	if errors.Is(err, wire.ErrMaybeDelivered) {
		t.Errorf("Do on a dead conn = %v: must not claim maybe-delivered, it was never written", err)
	}
	if called {
		t.Fatal("done ran for a request on a dead conn")
	}
	if r.calls.Load() != 1 {
		t.Fatalf("timed-out call completed %d times", r.calls.Load())
	}
}

// The timeout applies per request: a call queued behind a slow one times
// out too, and both complete exactly once.
func TestDo_RequestTimeoutFailsQueuedCalls(t *testing.T) {
	cl, addr := newCluster(t)
	held := blockKey(t, cl, kmsg.Metadata)
	c := dial(t, addr, &wire.Config{RequestTimeout: 200 * time.Millisecond})
	rs := []*result{newResult(), newResult(), newResult()}
	for _, r := range rs {
		if err := c.Do(metadataReq("t"), false, r.done); err != nil {
			t.Fatal(err)
		}
	}
	recv(t, held, "broker holding Metadata")
	for i, r := range rs {
		if _, err := r.wait(t, "queued call"); !errors.Is(err, wire.ErrMaybeDelivered) || !errors.Is(err, wire.ErrRequestTimeout) {
			t.Errorf("call %d: %v, want ErrMaybeDelivered and ErrRequestTimeout", i, err)
		}
	}
	requireClosed(t, c.Done(), "Done")
	for i, r := range rs {
		if n := r.calls.Load(); n != 1 {
			t.Errorf("call %d completed %d times", i, n)
		}
	}
}

// Answers arriving well within the timeout keep an idle connection alive
// beyond it: the deadline is per request, not per connection.
func TestDo_TimeoutDoesNotKillIdleConn(t *testing.T) {
	_, addr := newCluster(t)
	c := dial(t, addr, &wire.Config{RequestTimeout: 50 * time.Millisecond})
	for i := range 3 {
		if _, err := c.Request(context.Background(), metadataReq("t")); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		// Idle for longer than the request timeout.
		timer := time.NewTimer(100 * time.Millisecond)
		select {
		case <-c.Done():
			timer.Stop()
			t.Fatalf("idle connection died: %v", c.Err())
		case <-timer.C:
		}
	}
}

func TestClose_FailsPendingCalls(t *testing.T) {
	cl, addr := newCluster(t)
	held := blockKey(t, cl, kmsg.Metadata)
	c := dial(t, addr, &wire.Config{})
	rs := make([]*result, 5)
	for i := range rs {
		rs[i] = newResult()
		if err := c.Do(metadataReq("t"), false, rs[i].done); err != nil {
			t.Fatal(err)
		}
	}
	recv(t, held, "broker holding Metadata")
	closeConn(t, c)
	// Close waits for the reader, which completes every pending call.
	for i, r := range rs {
		select {
		case <-r.ch:
		default:
			t.Fatalf("call %d not completed when Close returned", i)
		}
		if !errors.Is(r.err, wire.ErrMaybeDelivered) || !errors.Is(r.err, wire.ErrConnClosed) {
			t.Errorf("call %d: %v, want ErrMaybeDelivered wrapping ErrConnClosed", i, r.err)
		}
		if n := r.calls.Load(); n != 1 {
			t.Errorf("call %d completed %d times", i, n)
		}
	}
	requireClosed(t, c.Done(), "Done after Close")
	if err := c.Err(); !errors.Is(err, wire.ErrConnClosed) {
		t.Errorf("Err() = %v, want ErrConnClosed", err)
	}
	if err := c.Do(metadataReq("t"), false, func(kmsg.Response, error) { t.Error("done ran after Close") }); !errors.Is(err, wire.ErrConnClosed) {
		t.Errorf("Do after Close = %v, want ErrConnClosed", err)
	}
	closeConn(t, c) // a second Close is harmless
}

func TestDo_BrokerClosesConnection(t *testing.T) {
	cl, addr := newCluster(t)
	held := make(chan struct{}, 1)
	cl.ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
		held <- struct{}{}
		return nil, errors.New("injected failure"), true // kfake closes the connection
	})
	c := dial(t, addr, &wire.Config{})
	r := newResult()
	if err := c.Do(metadataReq("t"), false, r.done); err != nil {
		t.Fatal(err)
	}
	recv(t, held, "control function")
	if _, err := r.wait(t, "call on a connection the broker closed"); !errors.Is(err, wire.ErrMaybeDelivered) {
		t.Fatalf("done error = %v, want ErrMaybeDelivered", err)
	}
	requireClosed(t, c.Done(), "Done after broker close")
	if c.Err() == nil {
		t.Error("Err() = nil after the broker closed the connection")
	}
	if err := c.Do(metadataReq("t"), false, func(kmsg.Response, error) { t.Error("done ran on a dead conn") }); !errors.Is(err, wire.ErrConnClosed) {
		t.Errorf("Do on a dead conn = %v, want ErrConnClosed", err)
	}
}
