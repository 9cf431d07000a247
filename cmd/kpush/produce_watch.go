package main

// The broker watch of "kpush produce": noticing that nothing is being
// acknowledged, finding out which brokers are unreachable, and deciding to
// stop reading when records fail because no broker is reachable.
//
// Goroutines: the watch goroutine (run) ticks, reads the tally's counters
// and dials the brokers; it owns lastAck and the dial results, and
// publishes the stall state through an atomic pointer read by the progress
// line and by callbacks (via unreachable). It exits when stop is called.

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// stallAfter is how long nothing may be acknowledged, with records
// waiting, before the brokers are dialled and the stall is shown.
const stallAfter = 2 * time.Second

// stall describes a run where nothing is being acknowledged.
type stall struct {
	since     time.Time // last acknowledgement (or the first record)
	down      []string  // brokers that refused or timed out a dial
	downSince time.Time // first dial failure of this stall
	allDown   bool
	waiting   int64     // records without an outcome
	failFrom  time.Time // the oldest of them fail about then
}

// text is the stalled display, e.g. "waiting for broker 127.0.0.1:9092:
// unreachable, nothing acknowledged since 20:31:05 (3s ago); 1200 records
// wait, failing from 20:31:35 (message.timeout.ms)".
func (st *stall) text(now time.Time) string {
	if len(st.down) == 0 {
		return fmt.Sprintf("waiting for brokers: nothing acknowledged for %v, brokers accept connections; %d records wait, failing from %s (message.timeout.ms)",
			now.Sub(st.since).Round(time.Second), st.waiting, st.failFrom.Format("15:04:05"))
	}
	noun := "broker"
	if len(st.down) > 1 {
		noun = "brokers"
	}
	return fmt.Sprintf("waiting for %s %s: unreachable, nothing acknowledged since %s (%v ago); %d records wait, failing from %s (message.timeout.ms)",
		noun, strings.Join(st.down, ", "), st.since.Format("15:04:05"), now.Sub(st.since).Round(time.Second),
		st.waiting, st.failFrom.Format("15:04:05"))
}

// watch tracks acknowledgements and broker reachability.
type watch struct {
	t       *tally
	brokers func() []string // seed brokers and the brokers the producers know
	timeout time.Duration   // message.timeout.ms
	handed  *atomic.Int64   // records handed to the producers
	report  func(string)    // prints a stall on a non-terminal stderr; may be nil

	state atomic.Pointer[stall] // nil: not stalled
	done  chan struct{}
	wg    sync.WaitGroup
}

func newWatch(t *tally, handed *atomic.Int64, timeout time.Duration, brokers func() []string, report func(string)) *watch {
	w := &watch{t: t, brokers: brokers, timeout: timeout, handed: handed, report: report, done: make(chan struct{})}
	w.wg.Add(1)
	go w.run()
	return w
}

// stop ends the watch goroutine and waits for it.
func (w *watch) stop() {
	close(w.done)
	w.wg.Wait()
}

// unreachable reports whether the last dial found every broker down.
func (w *watch) unreachable() bool {
	st := w.state.Load()
	return st != nil && st.allDown
}

func (w *watch) run() {
	defer w.wg.Done()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	lastAck, lastDone := time.Now(), int64(0)
	for {
		select {
		case <-w.done:
			return
		case now := <-tick.C:
			sent, failed, _ := w.t.counts()
			waiting := w.handed.Load() - sent - failed
			if sent+failed != lastDone || waiting <= 0 {
				lastAck, lastDone = now, sent+failed
				w.state.Store(nil)
				continue
			}
			if now.Sub(lastAck) < stallAfter {
				continue
			}
			var down []string
			brokers := w.brokers()
			for _, b := range brokers {
				c, err := net.DialTimeout("tcp", b, time.Second)
				if err != nil {
					down = append(down, b)
					continue
				}
				c.Close()
			}
			prev := w.state.Load()
			st := &stall{since: lastAck, down: down, allDown: len(down) == len(brokers) && len(down) > 0,
				waiting: waiting, failFrom: lastAck.Add(w.timeout)}
			w.state.Store(st)
			if w.report != nil && (prev == nil || len(prev.down) != len(st.down)) {
				w.report(st.text(time.Now()))
			}
		}
	}
}
