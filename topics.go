package kpush

// Topics, partitions and brokers as the metadata goroutine sees them.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kpush/kpush/internal/clock"
	"github.com/kpush/kpush/internal/idem"
	"github.com/kpush/kpush/internal/meta"
	"github.com/kpush/kpush/internal/partitioner"
	"github.com/kpush/kpush/internal/sink"
	"github.com/kpush/kpush/internal/wire"
)

// unknownTopicTries is how many metadata answers in a row must say a topic
// does not exist before its records fail with ErrUnknownTopic (a topic
// created a moment ago may not be known to every broker yet).
const unknownTopicTries = 3

// defaultTopicIdle is how long a topic may go without records before it
// is dropped from metadata requests (Java metadata.max.idle.ms).
const defaultTopicIdle = 5 * time.Minute

// stickyBytes is how many bytes keyless records send to one partition
// before the sticky partitioner moves on (Java batch.size default).
const stickyBytes = 16 << 10

type topic struct {
	name   string
	picker partitioner.Picker
	parts  atomic.Pointer[[]*sink.PartitionQueue]

	ready chan struct{} // closed when parts is first set or err is set
	err   error         // set before ready is closed when the topic failed

	// epochs is the highest leader epoch applied per partition (-1:
	// unknown), for the topic ID topicID; both guarded by
	// Producer.leaderMu (see leaders.go).
	epochs  []int32
	topicID [16]byte
	// lastUse is when a record last asked for the topic (clock.Mono
	// nanoseconds), refreshed at most once a second; a topic unused for
	// topicIdle and holding no record is dropped from metadata requests.
	lastUse atomic.Int64
	// leaderless is set by the metadata goroutine while some partition has
	// no leader (or the topic was deleted or denied): a record added then
	// asks for a refresh, since no sink will.
	leaderless atomic.Bool

	// Owned by the metadata goroutine.
	unknown int
	// lastErr is why the topic is not usable yet; read by waiting senders.
	lastErr atomic.Pointer[error]
}

func (t *topic) setLastErr(err error) {
	if err == nil {
		t.lastErr.Store(nil)
		return
	}
	t.lastErr.Store(&err)
}

// topic returns the topic's state, waiting for its first metadata (with
// try set, returning errWouldWait instead of waiting).
func (p *Producer) topic(ctx context.Context, name string, mono int64, try bool) (t *topic, waited bool, err error) {
	t = (*p.topics.Load())[name]
	if t == nil {
		if err := checkTopicName(name); err != nil {
			return nil, false, err
		}
		t = p.addTopic(name)
	}
	if mono-t.lastUse.Load() > int64(time.Second) { // a shared read; a store once a second
		t.lastUse.Store(mono)
	}
	select {
	case <-t.ready:
	default:
		if try { // TrySendCancelable: the caller waits elsewhere
			return nil, false, errWouldWait
		}
		// First records of a topic: wait for metadata, bounded by ctx, the
		// delivery timeout and Close.
		waited = true
		timer := time.NewTimer(p.cfg.deliveryTimeout - time.Duration(clock.Mono()-mono))
		defer timer.Stop()
		select {
		case <-t.ready:
		case <-ctx.Done():
			return nil, true, ctx.Err()
		case <-p.closing:
			return nil, true, ErrClosed
		case <-timer.C:
			if last := t.lastErr.Load(); last != nil {
				return nil, true, fmt.Errorf("%w: %w", ErrDeliveryTimeout, *last)
			}
			return nil, true, ErrDeliveryTimeout
		}
	}
	if t.err != nil {
		return nil, waited, t.err
	}
	return t, waited, nil
}

func (p *Producer) addTopic(name string) *topic {
	picker := newTopicPicker(p.cfg.partitioner, name) // may run user code: not under p.mu
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.topics.Load()
	if t := old[name]; t != nil {
		return t
	}
	if t := p.retired[name]; t != nil {
		// Dropped a while ago: the same partitions (and their sequence
		// state) come back, so one topic partition never has two.
		delete(p.retired, name)
		m := maps.Clone(old)
		m[name] = t
		p.topics.Store(&m)
		p.ref.Trigger()
		return t
	}
	t := &topic{name: name, picker: picker, ready: make(chan struct{})}
	empty := []*sink.PartitionQueue{}
	t.parts.Store(&empty)
	m := maps.Clone(old)
	m[name] = t
	p.topics.Store(&m)
	p.ref.Trigger()
	return t
}

// failTopic fails the records waiting for topic t's first metadata with
// err and forgets the topic, so a later Send asks the cluster again. Runs
// on the metadata goroutine, for a topic that is not ready.
func (p *Producer) failTopic(name string, t *topic, err error) {
	t.err = err
	p.mu.Lock()
	p.removeTopicLocked(name)
	p.mu.Unlock()
	close(t.ready)
}

func (p *Producer) removeTopicLocked(name string) {
	old := *p.topics.Load()
	m := maps.Clone(old)
	delete(m, name)
	p.topics.Store(&m)
}

func (p *Producer) topicNames() []string {
	m := *p.topics.Load()
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (p *Producer) triggerMetadata() { p.ref.Trigger() }

// allPartitions returns the partitions of every topic, including dropped
// ones (a Send that found a topic just before it was dropped may still
// add a record there; the reaper and Close must see it).
func (p *Producer) allPartitions() []*sink.PartitionQueue {
	var all []*sink.PartitionQueue
	for _, t := range *p.topics.Load() {
		all = append(all, *t.parts.Load()...)
	}
	p.mu.Lock()
	for _, t := range p.retired {
		all = append(all, *t.parts.Load()...)
	}
	p.mu.Unlock()
	return all
}

// busy reports whether records wait for topic t: senders waiting for its
// first metadata, or a partition holding records. Only then is a refresh
// worth triggering for its troubles (no leader, deleted, denied).
func busy(t *topic) bool {
	if !isReady(t) {
		return true
	}
	for _, part := range *t.parts.Load() {
		if !part.Idle() {
			return true
		}
	}
	return false
}

// dropIdleTopics stops asking about topics no record used for topicIdle
// whose partitions hold nothing (Java metadata.max.idle.ms); a dropped
// topic's partitions are kept aside (p.retired) and come back with the
// next record. Retired topics idle for another topicIdle are forgotten.
// Runs on the metadata goroutine.
func (p *Producer) dropIdleTopics(now int64) {
	idle := p.topicIdle.Load()
	for name, t := range *p.topics.Load() {
		if !isReady(t) || now-t.lastUse.Load() < idle || busy(t) {
			continue
		}
		p.mu.Lock()
		if cur := (*p.topics.Load())[name]; cur == t {
			p.removeTopicLocked(name)
			t.lastUse.Store(now) // retired since
			p.retired[name] = t
		}
		p.mu.Unlock()
	}
	p.mu.Lock()
	retired := maps.Clone(p.retired)
	p.mu.Unlock()
	for name, t := range retired {
		if now-t.lastUse.Load() < idle || busy(t) {
			continue
		}
		p.mu.Lock()
		if p.retired[name] == t {
			delete(p.retired, name)
		}
		p.mu.Unlock()
	}
}

// applyMetadata runs on the metadata goroutine after every fetch. It
// reports whether the answer was healthy (nothing waits for a better one),
// which resets the refresh backoff.
func (p *Producer) applyMetadata(s *meta.Snapshot, err error) (healthy bool) {
	topics := *p.topics.Load()
	if err != nil {
		if errors.Is(err, wire.ErrAuth) {
			p.failWaitingTopics(err)
			return false // logged by authEvent; the next Send asks again
		}
		p.cfg.logger.Warn("kpush: metadata fetch failed", "err", err)
		again := false
		for _, t := range topics {
			t.setLastErr(fmt.Errorf("%w: %w", ErrNoBroker, err))
			again = again || busy(t)
		}
		if again { // backs off (meta.Refresher); idle topics wait for the periodic refresh
			p.ref.Trigger()
		}
		return false
	}
	p.mu.Lock()
	for id, b := range s.Brokers {
		if sk := p.sinks[id]; sk != nil {
			sk.SetAddr(b.Addr)
		} else {
			p.sinks[id] = p.eng.NewSink(id, b.Addr)
		}
	}
	sinks := maps.Clone(p.sinks) // leader hints may add sinks meanwhile
	p.mu.Unlock()

	again := false
	for name, t := range topics {
		mt, ok := s.Topics[name]
		switch {
		case !ok || errors.Is(mt.Err, kerr.UnknownTopicOrPartition):
			t.unknown++
			uerr := fmt.Errorf("%w %q", ErrUnknownTopic, name)
			t.setLastErr(uerr)
			if t.unknown >= unknownTopicTries {
				if !isReady(t) {
					p.failTopic(name, t, uerr)
					continue
				}
				// Deleted while in use: what waits fails now, not at the
				// delivery timeout — not written where nothing was sent,
				// outcome unknown for retry batches that may have been.
				p.failTopicRecords(t, uerr)
			}
			again = again || busy(t)
			continue
		case mt.Err != nil:
			t.setLastErr(mt.Err)
			if !kerr.IsRetriable(mt.Err) {
				// Authorization and similar: fail the waiting records.
				if !isReady(t) {
					p.failTopic(name, t, mt.Err)
					continue
				}
				p.failTopicRecords(t, mt.Err)
			}
			again = again || busy(t)
			continue
		}
		t.unknown = 0
		t.setLastErr(nil)
		parts := *t.parts.Load()
		if len(mt.Partitions) > len(parts) {
			grown := make([]*sink.PartitionQueue, len(mt.Partitions))
			copy(grown, parts)
			for i := len(parts); i < len(grown); i++ {
				grown[i] = p.eng.NewPartitionQueue(name, int32(i))
			}
			t.parts.Store(&grown)
			parts = grown
		}
		hasLeader := make([]bool, len(mt.Partitions))
		leaderless := false
		p.leaderMu.Lock()
		t.checkTopicIDLocked(mt.ID)
		for i, mp := range mt.Partitions {
			if !t.acceptEpochLocked(i, mp.LeaderEpoch) {
				// Stale (KIP-320): this broker has not seen the latest
				// leader change; keep the leader we know.
				hasLeader[i] = parts[i].Leader() != nil
				leaderless = leaderless || !hasLeader[i]
				continue
			}
			var leader *sink.Sink
			if mp.Leader >= 0 {
				leader = sinks[mp.Leader]
			}
			hasLeader[i] = leader != nil
			parts[i].SetLeader(leader)
			if leader == nil {
				leaderless = true
				if !parts[i].Idle() {
					again = true // records wait for a leader; backs off (meta.Refresher)
				}
			}
		}
		p.leaderMu.Unlock()
		// Keyless records avoid partitions without a leader (KIP-794).
		t.picker.SetAvailable(hasLeader)
		t.leaderless.Store(leaderless)
		if !isReady(t) && len(parts) > 0 {
			close(t.ready)
		}
	}
	p.removeGoneSinks(s)
	p.dropIdleTopics(clock.Mono())
	if again {
		p.ref.Trigger()
	}
	return !again
}

// removeGoneSinks stops the sinks of brokers that left the cluster once no
// partition leads through them and nothing is queued or in flight there
// (else the next metadata answer tries again). A stale sink would dial
// its broker forever. Runs on the metadata goroutine, after the leaders
// were updated.
func (p *Producer) removeGoneSinks(s *meta.Snapshot) {
	p.mu.Lock()
	var gone []*sink.Sink
	for id, sk := range p.sinks {
		if _, ok := s.Brokers[id]; !ok {
			gone = append(gone, sk)
		}
	}
	p.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	// leaderMu keeps KIP-951 hints (reader goroutines) from moving a
	// partition to one of these sinks between the scan and the removal;
	// a later hint finds no sink and makes a new one from its endpoints.
	// Partition locks are taken without Producer.mu held.
	p.leaderMu.Lock()
	for _, part := range p.allPartitions() {
		if l := part.Leader(); l != nil {
			gone = slices.DeleteFunc(gone, func(sk *sink.Sink) bool { return sk == l })
		}
	}
	if testHookGoneScanned != nil {
		testHookGoneScanned()
	}
	stop := gone[:0]
	for _, sk := range gone {
		if !sk.Idle() {
			continue
		}
		p.mu.Lock()
		delete(p.sinks, sk.Node)
		p.mu.Unlock()
		stop = append(stop, sk)
	}
	p.leaderMu.Unlock()
	// Stopped after leaderMu is released: Stop only signals today, but the
	// sink's reader goroutine may be waiting for leaderMu (applyLeaderHints),
	// so nothing that could ever wait for the sink runs under it.
	for _, sk := range stop {
		sk.Stop()
		p.cfg.logger.Debug("kpush: broker left the cluster; its sink is stopped", "broker", sk.Node)
	}
}

// failTopicRecords fails what a ready topic's partitions hold but have not
// in flight (the topic was deleted or access to it denied) and detaches
// them from their leaders, so nothing more is sent until metadata names
// the topic again. Batches in flight come back and fail on a later answer;
// the async callbacks of the records failed here run after theirs (send
// order), or at the records' deadline.
func (p *Producer) failTopicRecords(t *topic, err error) {
	parts := *t.parts.Load()
	t.leaderless.Store(true)
	sink.FailBuffered(parts, err)
	// A leader change like any other: under leaderMu, so a KIP-951 hint on
	// a reader goroutine cannot interleave with it (leaders.go).
	p.leaderMu.Lock()
	for _, part := range parts {
		part.SetLeader(nil)
	}
	p.leaderMu.Unlock()
}

func isReady(t *topic) bool {
	select {
	case <-t.ready:
		return true
	default:
		return false
	}
}

// requestBump asks the metadata goroutine for a new producer epoch.
// Requests coalesce, but one for the current ID wins over a pending one
// for an ID the producer already moved on from: a partition with retries
// under the old ID can still ask for that (Bump ignores it), and a
// partition on the current ID that asked meanwhile waits in phaseEpoch
// for a new ID that a lost request would never bring.
func (p *Producer) requestBump(old idem.ID) {
	p.mu.Lock()
	if p.bump == nil || *p.bump != p.idem.Current() {
		p.bump = &old
	}
	p.mu.Unlock()
	p.ref.Trigger()
}

// controlRequests runs on the metadata goroutine after each refresh: it
// loads the producer ID and performs epoch bumps. It reports false when
// the request it had to make failed, so the refresher backs off before the
// next attempt (meta.Refresher.OnIdle): a partition waiting for a bump
// sends nothing meanwhile, and its records expire at their deadline.
func (p *Producer) controlRequests(ctx context.Context) bool {
	p.mu.Lock()
	bump := p.bump
	p.bump = nil
	p.mu.Unlock()
	if !p.idem.NeedsLoad() && bump == nil {
		return true
	}
	if len(*p.topics.Load()) == 0 && bump == nil {
		return true // nothing to send yet: stay lazy
	}
	conn, err := p.ref.Fetcher.Conn(ctx)
	if err != nil {
		p.ref.Trigger()
		if bump != nil {
			p.requestBump(*bump)
		}
		return false
	}
	rctx, cancel := context.WithTimeout(ctx, p.cfg.requestTimeout)
	defer cancel()
	loading := p.idem.NeedsLoad()
	if loading {
		err = p.idem.Load(rctx, conn)
	} else {
		err = p.idem.Bump(rctx, conn, *bump)
	}
	if err != nil {
		p.cfg.logger.Warn("kpush: producer id request failed", "err", err)
		var ke *kerr.Error
		if loading && errors.As(err, &ke) && !ke.Retriable {
			// Authorization or an unsupported cluster: waiting cannot
			// help, so the records fail now, with the real cause. Nothing
			// is ever sent before the first ID, so none was written. (A
			// failed bump is retried instead, with the refresher's
			// backoff: the partitions that asked for it send nothing
			// meanwhile, and their records that expire carry this error
			// as their cause (idem.BumpErr); the others keep sending
			// under the current ID.)
			sink.FailBuffered(p.allPartitions(), err)
		}
		if bump != nil {
			p.requestBump(*bump)
		}
		p.ref.Trigger()
		return false
	}
	if !loading && len(p.hooks.bump) > 0 {
		p.epochBumped(*bump) // hooks.go; before the partitions resume
	}
	p.mu.Lock()
	for _, s := range p.sinks {
		s.Nudge()
	}
	p.mu.Unlock()
	for _, part := range p.allPartitions() {
		part.Requeue()
	}
	return true
}

// publicCause maps engine errors to the public sentinels. What the engine
// wrapped around one (why the delivery timeout passed: the producer ID or
// the epoch bump that kept failing) stays in the message and in the chain
// for errors.Is and errors.As.
func publicCause(err error) error {
	var pub, bare error
	switch {
	case errors.Is(err, sink.ErrDeliveryTimeout):
		pub, bare = ErrDeliveryTimeout, sink.ErrDeliveryTimeout
	case errors.Is(err, sink.ErrSequenceReset):
		pub, bare = ErrSequenceReset, sink.ErrSequenceReset
	default:
		return err
	}
	if err == bare {
		return pub
	}
	return &publicError{pub: pub, err: err}
}

// publicError is an engine error with a public sentinel in its chain.
type publicError struct{ pub, err error }

func (e *publicError) Error() string   { return e.err.Error() }
func (e *publicError) Unwrap() []error { return []error{e.pub, e.err} }

// checkTopicName applies Kafka's rules for topic names (Topic.validate in
// the Java client), so that a bad name fails at once instead of after a
// metadata round trip.
func checkTopicName(name string) error {
	switch {
	case name == "." || name == "..":
		return fmt.Errorf("%w %q: \".\" and \"..\" are reserved", ErrInvalidTopic, name)
	case len(name) > 249:
		return fmt.Errorf("%w: %d bytes long, at most 249 allowed", ErrInvalidTopic, len(name))
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("%w %q: character %q not allowed (only ASCII letters, digits, '.', '_', '-')", ErrInvalidTopic, name, c)
		}
	}
	return nil
}

// testHookGoneScanned, when set (by tests only), runs in removeGoneSinks
// between finding the sinks no partition leads through and stopping them.
var testHookGoneScanned func()
