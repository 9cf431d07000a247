package kafkatest

// Slept control functions and Close.
//
// kfake's Cluster.Close wakes every control function sleeping in
// SleepControl, but a sleep that is waking up when the cluster closes can
// deadlock kfake's run loop: the control function returns through the
// cluster's death instead of the run loop's go-ahead, takes kfake's control
// mutex and leaves it locked for the run loop to release, while the run loop,
// resuming the same sleep, waits for that mutex (continueSleptControl) and
// never exits. Close then reports "cluster goroutines still running". The
// fix here is ordering: Cluster.SleepControl counts the sleeps in progress,
// and Close ends them (closing) and waits for each to resume through the run
// loop before it closes the fake cluster; no new sleep starts once Close has
// begun.
//
// Goroutines: SleepControl runs wake on a goroutine of its own (started in
// the control function, so it carries the cluster's label) that ends when
// wake returns; the sleep itself may end earlier, when Close begins.

import (
	"sync"
	"time"
)

// sleeps tracks the control functions sleeping in Cluster.SleepControl.
// States: open (sleeps start) → closing (Close began: stop is closed, no
// sleep starts) → idle (closing and none in progress: idle is closed).
type sleeps struct {
	mu      sync.Mutex // guards the following fields
	closing bool
	n       int           // sleeps in progress
	stop    chan struct{} // closed when Close begins; made on first use
	idle    chan struct{} // closed once closing and n == 0; made on first use
}

// chans makes stop and idle on first use. s.mu must be held.
func (s *sleeps) chans() {
	if s.stop == nil {
		s.stop = make(chan struct{})
		s.idle = make(chan struct{})
	}
}

// SleepControl sleeps the kfake control function it is called from until
// wake returns or Close begins, like kfake's Cluster.SleepControl (whose
// notes on ordering within a connection apply), but safe against Close:
// Close waits for the sleep to resume before it closes the fake cluster.
// Control functions that sleep should call this, not Fake().SleepControl.
// Once Close has begun it returns at once. wake must return eventually
// (Close reports the goroutine running it as left running otherwise).
func (c *Cluster) SleepControl(wake func()) {
	fake := c.Fake()
	if fake == nil {
		return
	}
	s := &c.sleeps
	s.mu.Lock()
	s.chans()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.n++
	stop := s.stop
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.n--; s.n == 0 && s.closing {
			close(s.idle)
		}
	}()
	fake.SleepControl(func() {
		woke := make(chan struct{})
		go func() {
			defer close(woke)
			wake()
		}()
		select {
		case <-woke:
		case <-stop:
		}
	})
}

// endSleeps ends every sleep in SleepControl and waits up to timeout for
// them to resume; it reports whether they did. It runs once, from Close,
// before the fake cluster closes.
func (c *Cluster) endSleeps(timeout time.Duration) bool {
	s := &c.sleeps
	s.mu.Lock()
	s.chans()
	s.closing = true
	close(s.stop)
	if s.n == 0 {
		close(s.idle)
	}
	idle := s.idle
	s.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-idle:
		return true
	case <-t.C:
		return false
	}
}
