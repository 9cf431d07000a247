// Package idem holds the idempotent producer's identity: the producer id and
// epoch from InitProducerID. Per-partition sequence numbers live with each
// partition's accumulator (internal/sink), which assigns them when a batch is
// first sent.
//
// Goroutines and ownership: Manager.mu guards every field but cur, which
// is read lock-free by sink goroutines on every drain (an atomic pointer to
// an immutable ID). The metadata goroutine calls Load and Bump (Set stands in
// for them in tests). Nothing here starts a goroutine. A bump changes the
// producer-wide ID; each partition moves to it on its own (internal/sink:
// a partition whose own sequences broke sends nothing until the new ID is
// here; the others send their retries under the old ID first, since
// brokers keep each ID's state per partition).
package idem

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/internal/wire"
)

// ID is a producer id and epoch. ID{-1, -1} means "not idempotent".
type ID struct {
	Producer int64
	Epoch    int16
}

// None is the ID used by non-idempotent producers.
var None = ID{Producer: -1, Epoch: -1}

// Manager obtains and holds the producer ID.
type Manager struct {
	mu      sync.Mutex
	id      ID
	cur     atomic.Pointer[ID] // mirrors id for lock-free Current
	loaded  bool
	err     error         // last load error, nil once loaded
	bumpErr error         // why the last Bump of id failed; nil once id moves on (BumpErr)
	ready   chan struct{} // closed when loaded is first set
	enabled bool
}

// NewManager returns a manager; when enabled is false, Wait returns None at once.
func NewManager(enabled bool) *Manager {
	m := &Manager{ready: make(chan struct{}), enabled: enabled, id: None}
	m.cur.Store(&None)
	if !enabled {
		m.loaded = true
		close(m.ready)
	}
	return m
}

// Enabled reports whether the producer is idempotent.
func (m *Manager) Enabled() bool { return m.enabled }

// NeedsLoad reports whether Load should be called.
func (m *Manager) NeedsLoad() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.enabled && !m.loaded
}

// Load issues InitProducerID on conn. The error of a failed attempt is
// kept for Err; the caller tries again later.
func (m *Manager) Load(ctx context.Context, conn *wire.Conn) error {
	id, err := initProducerID(ctx, conn, None)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.err = err
		return err
	}
	m.setLocked(id)
	m.err = nil
	if !m.loaded {
		m.loaded = true
		close(m.ready)
	}
	return nil
}

// Bump replaces the producer epoch after the broker lost track of our
// sequences (KIP-360): InitProducerID with the current id and epoch (v3+),
// or a fresh producer id from older brokers. It does nothing when the ID has
// already moved on from old.
func (m *Manager) Bump(ctx context.Context, conn *wire.Conn, old ID) error {
	if m.Current() != old {
		return nil
	}
	from := None
	if conn.Version(int16(kmsg.InitProducerID)) >= 3 {
		from = old
	}
	id, err := initProducerID(ctx, conn, from)
	if err == nil && id == old && from != None {
		// A bump answered with the ID it was given would leave the
		// partitions that wait for a new one (internal/sink's phaseEpoch)
		// waiting until their records expire: ask for a fresh ID.
		id, err = initProducerID(ctx, conn, None)
	}
	if err == nil && id == old {
		err = fmt.Errorf("init producer id: the broker answered a bump with the same producer id %d and epoch %d", id.Producer, id.Epoch)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.id != old {
		return err // moved on meanwhile: this failure is no longer the reason anything waits
	}
	if err != nil {
		m.bumpErr = err
		return err
	}
	m.setLocked(id)
	return nil
}

// BumpErr returns why the last Bump of the current ID failed, or nil when
// none failed since the ID was set. Partitions waiting for a new epoch
// report it as the cause of the records that expire while they wait.
func (m *Manager) BumpErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bumpErr
}

// initProducerID asks for a producer ID; from is None for a new one, or the
// current ID to bump its epoch.
func initProducerID(ctx context.Context, conn *wire.Conn, from ID) (ID, error) {
	req := kmsg.NewPtrInitProducerIDRequest()
	req.ProducerID, req.ProducerEpoch = from.Producer, from.Epoch
	req.TransactionTimeoutMillis = 60000
	r, err := conn.Request(ctx, req)
	if err != nil {
		return None, fmt.Errorf("init producer id: %w", err)
	}
	resp := r.(*kmsg.InitProducerIDResponse)
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return None, fmt.Errorf("init producer id: %w", err)
	}
	return ID{Producer: resp.ProducerID, Epoch: resp.ProducerEpoch}, nil
}

// Err returns the last InitProducerID error while no ID is loaded.
func (m *Manager) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.loaded {
		return nil
	}
	return m.err
}

// Ready is closed once an ID is loaded (at once when not idempotent).
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// Current returns the loaded ID (None before loading or when disabled).
// Lock-free.
func (m *Manager) Current() ID { return *m.cur.Load() }

func (m *Manager) setLocked(id ID) {
	m.id = id
	m.bumpErr = nil
	m.cur.Store(&id)
}

// NewLoaded returns an idempotent manager that already holds id, for tests
// and tools that drive the engine without a broker.
func NewLoaded(id ID) *Manager {
	m := NewManager(true)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setLocked(id)
	m.loaded = true
	close(m.ready)
	return m
}

// Set replaces the current ID as a completed Bump would, for tests and
// tools that drive the engine without a broker.
func (m *Manager) Set(id ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setLocked(id)
}
