package kpush

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/kpush/kpush/internal/sink"
)

// WithCoalesceMaxWait sets the cap on one coalescing wait (tests only; the
// default is 5 ms).
func WithCoalesceMaxWait(d time.Duration) Option {
	return optionFunc(func(c *config) { c.coalesceMaxWait = d })
}

// DebugPartitions describes every partition's state (tests only).
func (p *Producer) DebugPartitions() string {
	var b strings.Builder
	for _, part := range p.allPartitions() {
		b.WriteString(part.DebugString())
		b.WriteByte('\n')
	}
	return b.String()
}

// SetTopicIdle shortens how long a topic may go unused before it is
// dropped from metadata requests (tests only).
func (p *Producer) SetTopicIdle(d time.Duration) { p.topicIdle.Store(int64(d)) }

// SinkWork counts what the sinks did, from sink.TestHooks (tests only).
type SinkWork struct {
	LoopWakes, InlineWrites, LoopWrites atomic.Int64
	// OwnReads counts responses a Send caller read itself (lent reads);
	// OwnReadMisses lent reads that read nothing (taken back, or the
	// connection died).
	OwnReads, OwnReadMisses atomic.Int64
}

// CountSinkWork starts counting sink loop wake-ups and who wrote each
// produce request (call before the first record).
func (p *Producer) CountSinkWork() *SinkWork {
	w := &SinkWork{}
	p.eng.SetTestHooks(sink.TestHooks{
		LoopWoken: func() { w.LoopWakes.Add(1) },
		Written: func(inline bool) {
			if inline {
				w.InlineWrites.Add(1)
			} else {
				w.LoopWrites.Add(1)
			}
		},
		OwnRead: func(read bool) {
			if read {
				w.OwnReads.Add(1)
			} else {
				w.OwnReadMisses.Add(1)
			}
		},
	})
	return w
}

// LockAsyncSlabs takes the SendAsync slab lock, as a sender holding it
// would, until the returned func is called (tests only): a SendAsync that
// needs a new slab waits meanwhile.
func (p *Producer) LockAsyncSlabs() (unlock func()) {
	p.asyncs.mu.Lock()
	return p.asyncs.mu.Unlock
}

// OnCoalesceScanned runs f on a sink's loop each time a coalescing wait has
// summed the ready partitions' bytes, before it settles how many more it
// needs (tests only; replaces CountSinkWork's hooks).
func (p *Producer) OnCoalesceScanned(f func()) {
	p.eng.SetTestHooks(sink.TestHooks{CoalesceScanned: f})
}
