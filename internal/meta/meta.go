// Package meta fetches cluster metadata (brokers, topics, partition leaders)
// and runs the refresh loop.
//
// Goroutines and ownership:
//   - Refresher.Run is the only goroutine that fetches. It owns the Fetcher
//     (and so its connection), so at most one metadata request is in flight.
//     It exits when its stop channel is closed, after its one helper
//     goroutine (started with Refresher.Go, which cancels an in-progress
//     fetch at stop) has exited.
//   - Trigger may be called from any goroutine; triggers coalesce in a
//     one-slot channel. Triggered refreshes back off exponentially with
//     jitter (KIP-580): after n unhealthy answers in a row (Apply reports
//     whether an answer left something waiting, OnIdle whether its control
//     requests failed), the next triggered refresh waits MinInterval·2^n,
//     capped at MaxInterval, after the previous one; after a healthy
//     answer it waits MinInterval. A problem
//     that metadata cannot fix (deleted topic, no leader, unreachable
//     cluster) therefore costs at most about one request per MaxInterval
//     once the backoff has grown, while leader moves are followed at once.
//   - Snapshots are immutable once handed to Apply.
package meta

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/internal/wire"
)

// Broker is one broker of the cluster.
type Broker struct {
	ID   int32
	Addr string // host:port
}

// PartitionInfo is one partition's metadata.
type PartitionInfo struct {
	ID          int32
	Leader      int32 // -1 when the partition has no leader
	LeaderEpoch int32
	Err         error // partition-level error (e.g. LEADER_NOT_AVAILABLE), nil when fine
}

// Topic is one topic's metadata.
type Topic struct {
	Name       string
	ID         [16]byte        // topic ID (KIP-516, Metadata v10+); zero when not sent
	Partitions []PartitionInfo // indexed by partition id
	Err        error           // topic-level error (e.g. UNKNOWN_TOPIC_OR_PARTITION)
}

// Snapshot is the result of one metadata fetch. Immutable.
type Snapshot struct {
	Brokers map[int32]Broker
	Topics  map[string]Topic
	Fetched time.Time
}

// Fetcher issues Metadata requests over one connection it keeps, moving to
// another known broker when that connection fails. Not safe for concurrent
// use: one goroutine (the Refresher) owns it.
type Fetcher struct {
	cfg   *wire.Config
	seeds []string
	addrs []string // seeds plus every broker seen, tried in turn
	next  int
	conn  *wire.Conn
}

// NewFetcher returns a Fetcher that starts from the seed addresses.
func NewFetcher(cfg *wire.Config, seeds []string) *Fetcher {
	return &Fetcher{cfg: cfg, seeds: seeds, addrs: slices.Clone(seeds)}
}

// Conn returns a live connection to some broker, dialing if needed. Other
// control requests (InitProducerID) reuse it.
func (f *Fetcher) Conn(ctx context.Context) (*wire.Conn, error) {
	if f.conn != nil && f.conn.Err() == nil {
		return f.conn, nil
	}
	if f.conn != nil {
		f.conn.Close()
		f.conn = nil
	}
	var errs []error
	for range len(f.addrs) {
		addr := f.addrs[f.next%len(f.addrs)]
		f.next++
		c, err := wire.Dial(ctx, addr, f.cfg)
		if err == nil {
			f.conn = c
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("every known broker failed: %w", errors.Join(errs...))
}

// Close closes the fetcher's connection.
func (f *Fetcher) Close() {
	if f.conn != nil {
		f.conn.Close()
		f.conn = nil
	}
}

// Fetch asks for metadata of the given topics (never "all topics").
func (f *Fetcher) Fetch(ctx context.Context, topics []string) (*Snapshot, error) {
	conn, err := f.Conn(ctx)
	if err != nil {
		return nil, err
	}
	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = false
	req.Topics = make([]kmsg.MetadataRequestTopic, 0, len(topics))
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	r, err := conn.Request(ctx, req)
	if err != nil {
		conn.Close() // a timed-out request leaves the connection in an unknown state
		return nil, err
	}
	resp := r.(*kmsg.MetadataResponse)
	s := &Snapshot{
		Brokers: make(map[int32]Broker, len(resp.Brokers)),
		Topics:  make(map[string]Topic, len(resp.Topics)),
		Fetched: time.Now(),
	}
	for _, b := range resp.Brokers {
		addr := net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
		s.Brokers[b.NodeID] = Broker{ID: b.NodeID, Addr: addr}
		if !slices.Contains(f.addrs, addr) {
			f.addrs = append(f.addrs, addr)
		}
	}
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		mt := Topic{Name: *t.Topic, ID: t.TopicID, Err: kerr.ErrorForCode(t.ErrorCode)}
		if mt.Err == nil {
			n := int32(0)
			for _, p := range t.Partitions {
				n = max(n, p.Partition+1)
			}
			mt.Partitions = make([]PartitionInfo, n)
			for i := range mt.Partitions {
				mt.Partitions[i] = PartitionInfo{ID: int32(i), Leader: -1, Err: kerr.LeaderNotAvailable}
			}
			for _, p := range t.Partitions {
				if p.Partition < 0 {
					continue
				}
				mp := PartitionInfo{ID: p.Partition, Leader: p.Leader, LeaderEpoch: p.LeaderEpoch, Err: kerr.ErrorForCode(p.ErrorCode)}
				if _, ok := s.Brokers[mp.Leader]; !ok {
					mp.Leader = -1
				}
				mt.Partitions[p.Partition] = mp
			}
		}
		s.Topics[mt.Name] = mt
	}
	return s, nil
}

// Refresher runs periodic and triggered metadata refreshes.
type Refresher struct {
	Fetcher     *Fetcher
	Interval    time.Duration // periodic refresh; default 5m
	MinInterval time.Duration // first backoff between triggered refreshes; default 100ms
	MaxInterval time.Duration // backoff cap for triggered refreshes; default 1s (Java retry.backoff.max.ms)
	Timeout     time.Duration // bound on one refresh; default 10s
	// Topics returns the topics to ask about.
	Topics func() []string
	// Apply receives every fetch result, on the Run goroutine, and reports
	// whether it was healthy: false when something still waits for a
	// better answer (fetch failed, no leader, unknown topic), so the next
	// triggered refresh backs off further.
	Apply func(s *Snapshot, err error) (healthy bool)
	// OnIdle, when set, runs on the Run goroutine after each refresh and is
	// a place for other control requests that need the Fetcher's connection.
	// It reports whether they succeeded (or none was needed): false counts
	// like an unhealthy answer, so a control request that keeps failing
	// (InitProducerID) is retried with the same growing backoff.
	OnIdle func(ctx context.Context) (ok bool)
	// Go starts Run's helper goroutine (the owner's goroutine group, so its
	// Close waits for it); nil means a plain go statement. Run returns only
	// after that goroutine has exited either way.
	Go func(f func())

	trigger chan struct{}
}

// Init must be called before Run or Trigger.
func (r *Refresher) Init() {
	r.trigger = make(chan struct{}, 1)
	if r.Interval <= 0 {
		r.Interval = 5 * time.Minute
	}
	if r.MinInterval <= 0 {
		r.MinInterval = 100 * time.Millisecond
	}
	if r.MaxInterval < r.MinInterval {
		r.MaxInterval = max(time.Second, r.MinInterval)
	}
	if r.Timeout <= 0 {
		r.Timeout = 10 * time.Second
	}
}

// Trigger asks for a refresh soon. Non-blocking; triggers coalesce.
func (r *Refresher) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Backoff returns the wait before a triggered refresh after n-1 unhealthy
// answers in a row (n ≥ 1): MinInterval·2^(n-1) with ±20% jitter so
// producers do not refresh in lockstep, then capped at MaxInterval (the cap
// applies after the jitter: MaxInterval is a bound, never exceeded).
func (r *Refresher) Backoff(n int) time.Duration {
	d := r.MinInterval << min(max(n-1, 0), 20)
	if d > r.MaxInterval || d <= 0 {
		d = r.MaxInterval
	}
	return min(time.Duration(float64(d)*(0.8+0.4*rand.Float64())), r.MaxInterval)
}

// Run refreshes until stop is closed. A helper goroutine (started with Go)
// cancels an in-progress fetch when stop closes; Run waits for it to exit.
func (r *Refresher) Run(stop <-chan struct{}) {
	defer r.Fetcher.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done, exited := make(chan struct{}), make(chan struct{})
	defer func() {
		close(done)
		<-exited
		cancel()
	}()
	watch := func() {
		defer close(exited)
		select {
		case <-stop:
			cancel()
		case <-done:
		}
	}
	if r.Go != nil {
		r.Go(watch)
	} else {
		go watch()
	}
	tick := time.NewTicker(r.Interval)
	defer tick.Stop()
	var last time.Time // end of the previous refresh
	unhealthy := 0     // answers in a row that left something waiting
	for {
		triggered := false
		select {
		case <-stop:
			return
		case <-r.trigger:
			triggered = true
		case <-tick.C:
		}
		// Back off so an error storm cannot turn into a request storm.
		if triggered && !last.IsZero() {
			if wait := r.Backoff(unhealthy+1) - time.Since(last); wait > 0 {
				pace := time.NewTimer(wait)
				select {
				case <-stop:
					pace.Stop()
					return
				case <-pace.C:
				}
			}
		}
		fctx, fcancel := context.WithTimeout(ctx, r.Timeout)
		s, err := r.Fetcher.Fetch(fctx, r.Topics())
		fcancel()
		healthy := r.Apply(s, err)
		if r.OnIdle != nil && !r.OnIdle(ctx) {
			healthy = false
		}
		if healthy {
			unhealthy = 0
		} else {
			unhealthy++
		}
		last = time.Now()
	}
}
