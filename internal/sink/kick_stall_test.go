package sink

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kpush/kpush/internal/clock"
	"github.com/kpush/kpush/internal/idem"
	"github.com/kpush/kpush/internal/wire"
)

// stallRelay is a loopback TCP relay in front of a broker whose
// client-to-broker direction can be stalled: the relay stops reading, so
// the client's socket buffers fill and its writes block, as with a broker
// that stopped reading (a paused process, a zero TCP window).
type stallRelay struct {
	target  string
	stalled atomic.Bool
	release chan struct{}
	mu      sync.Mutex
	conns   []net.Conn
}

func (r *stallRelay) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	up, err := (&net.Dialer{}).DialContext(ctx, network, r.target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		up.Close()
		return nil, err
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		up.Close()
		return nil, err
	}
	srv, err := ln.Accept()
	if err != nil {
		up.Close()
		client.Close()
		return nil, err
	}
	r.mu.Lock()
	r.conns = append(r.conns, up, client, srv)
	r.mu.Unlock()
	go func() { io.Copy(srv, up); srv.Close() }()
	go func() {
		buf := make([]byte, 32<<10)
		for {
			if r.stalled.Load() {
				<-r.release
			}
			n, err := srv.Read(buf)
			if n > 0 {
				if _, werr := up.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				up.Close()
				return
			}
		}
	}()
	return client, nil
}

func (r *stallRelay) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
}

// Send (producer.go) calls PartitionQueue.Add and only then waits on its
// ctx; Add writes the request itself when the sink is idle (kick). A
// request that does not fit the socket buffers of a broker that stopped
// reading would block that write until the write deadline, past Send's
// ctx: kick leaves requests over inlineMaxBytes to the loop, so Add
// returns at once.
func TestKick_BigRequestToStalledBrokerGoesToLoop(t *testing.T) {
	s, p, relay := stallSink(t, 1, 64<<20)

	far := clock.Mono() + int64(time.Hour)
	out := make(chanN, 4)
	sendFirst(t, p, out, far) // the loop dials and writes this one
	for s.inflight.Load() != 0 {
		time.Sleep(time.Millisecond)
	}

	relay.stalled.Store(true)
	big := newRec(out, far)
	big.Rec.Value = make([]byte, 32<<20) // more than the loopback socket buffers hold
	big.Size = int32(len(big.Rec.Value))
	start := time.Now()
	p.Add(big) // Send's ctx cannot end this call
	took := time.Since(start)
	t.Logf("Add of a sync record to an idle sink whose broker stopped reading returned after %v", took.Round(time.Millisecond))
	if took > time.Second {
		t.Fatalf("Add blocked %v in the caller's own write (kick): Send could not return at its ctx deadline", took.Round(time.Millisecond))
	}
}

// With acks=0 a request counts as answered once written, so nothing is
// ever in flight: were Sends to write inline, once the broker stops
// reading a Send with a small record would block in its own write until
// the write deadline. kick leaves acks=0 to the loop; Add returns at once
// while the loop blocks.
func TestKick_AcksNoneWritesOnLoop(t *testing.T) {
	_, p, relay := stallSink(t, 0, 1<<20)

	far := clock.Mono() + int64(time.Hour)
	out := make(chanN, 4)
	sendFirst(t, p, out, far) // the loop dials and writes this one
	relay.stalled.Store(true)
	for i := range 2000 {
		r := newRec(out, far)
		r.Rec.Value = make([]byte, 16<<10) // small: 16 KiB
		r.Size = int32(len(r.Rec.Value))
		start := time.Now()
		p.Add(r)
		if took := time.Since(start); took > time.Second {
			t.Fatalf("record %d: Add blocked %v in the caller's own write (kick, acks=0): Send could not return at its ctx deadline", i, took.Round(time.Millisecond))
		}
		select {
		case <-out:
		case <-time.After(2 * time.Second):
			t.Logf("record %d: the loop is blocked writing; Add returned at once (Send would return at its ctx deadline)", i)
			return
		}
	}
	t.Fatal("2000 records written to a broker that reads nothing")
}

// sendFirst adds one record to p and waits for its acknowledgement.
func sendFirst(t *testing.T, p *PartitionQueue, out chanN, deadline int64) {
	t.Helper()
	p.Add(newRec(out, deadline))
	select {
	case r := <-out:
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no outcome for the first record")
	}
}

// stallSink is a sink and partition "t"/0 on a one-broker kfake cluster
// reached through a stallRelay, with the given acks and batch limit; a
// blocked write ends at the wire's 4 s request timeout. Everything stops
// at the test's end.
func stallSink(t *testing.T, acks int16, maxBatchBytes int) (*Sink, *PartitionQueue, *stallRelay) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	relay := &stallRelay{target: c.ListenAddrs()[0], release: make(chan struct{})}
	// Produce v11 as kpush asks (MaxVersions): kfake wants topic IDs at v13.
	e := NewEngine(Config{Acks: acks, MaxInflight: 5, MaxBatchBytes: maxBatchBytes, RetryBackoff: time.Hour,
		RequestTimeout: time.Minute, Wire: &wire.Config{Dial: relay.dial, MaxVersions: map[int16]int16{0: 11}, RequestTimeout: 4 * time.Second}}, idem.NewManager(false))
	s := e.NewSink(0, c.ListenAddrs()[0])
	p := e.NewPartitionQueue("t", 0)
	p.SetLeader(s)
	t.Cleanup(func() { close(relay.release); relay.close(); e.Stop(); e.Wait(); c.Close() })
	return s, p, relay
}
