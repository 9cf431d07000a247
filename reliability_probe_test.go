package kpush_test

// The scheduler-starvation probe of the reliability scenarios. On a loaded
// machine (2 cores shared with other test binaries, the race detector) the
// Go scheduler or the OS can leave every goroutine of the test binary
// unscheduled for hundreds of milliseconds; an outcome that the engine
// delivers on time then looks late to the lateness invariant
// (reliability_invariants_test.go). The probe measures that delay: a few
// goroutines sleep in short ticks and record how late they wake. An outcome
// is late only by what it is late beyond the longest stall the probe saw in
// the same window (its deadline to its outcome: the time the probe's stalls
// cover in it), and in any case if it is
// later than lateCap: a real delay in the engine (a sleep, a missed timer)
// does not starve the probe, so it still fails, and a stall cannot excuse
// more than lateCap.
//
// Goroutines: startProbe starts the probe's goroutines (probeLanes);
// stopProbe ends them and waits for them. The runner (reliability_run_test.go) stops it once the
// senders are done, before lateness is judged.

import (
	"flag"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"
)

var relDiag = flag.Bool("kpush.reldiag", false, "reliability scenarios: log the scheduler-starvation probe's measurements of every scenario (a late outcome's failure message has them always)")

const (
	// probeTick is how long the probe sleeps between wakeups.
	probeTick = 2 * time.Millisecond
	// probeNoise: wakeups later than this are kept as stalls (timer
	// granularity and ordinary scheduling stay below it).
	probeNoise = time.Millisecond
)

// lateCap is the hard cap on lateness: an outcome later than this after its
// deadline fails whatever the probe saw. Ten times deadlineSlack without the
// race detector; under it, four times its 500ms slack.
func lateCap() time.Duration {
	if raceEnabled {
		return 2 * time.Second
	}
	return time.Second
}

// probeStall is one late wakeup: due and woke in ns since the probe's t0.
type probeStall struct{ due, woke int64 }

func (s probeStall) late() time.Duration { return time.Duration(s.woke - s.due) }

// relProbe measures scheduler starvation with probeLanes goroutines, each
// sleeping on its own timer: Go keeps timers per P, and a P whose thread
// the OS has descheduled holds its timers and its running goroutine until
// the thread runs again, while the other Ps go on (so one probe goroutine
// can miss a stall that holds the reaper's timer). States: running (from
// startProbe) → stopped (stopProbe returned: the lanes are final).
type relProbe struct {
	t0   time.Time
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex // guards the following fields
	wakeups int64
	lates   []time.Duration // lateness of every wakeup, for percentiles
	stalls  [][]probeStall  // per lane: wakeups later than probeNoise, in time order
}

// probeLanes is how many probe goroutines run: twice GOMAXPROCS, so their
// timers are spread over the Ps.
func probeLanes() int { return 2 * runtime.GOMAXPROCS(0) }

// startProbe starts a probe whose times are ns since t0.
func startProbe(t0 time.Time) *relProbe {
	p := &relProbe{t0: t0, stop: make(chan struct{}), stalls: make([][]probeStall, probeLanes())}
	for lane := range p.stalls {
		p.wg.Add(1)
		go p.run(lane)
	}
	return p
}

func (p *relProbe) run(lane int) {
	defer p.wg.Done()
	for {
		due := time.Since(p.t0) + probeTick
		time.Sleep(probeTick) // the measurement itself: how late this returns
		woke := time.Since(p.t0)
		late := woke - due
		p.mu.Lock()
		p.wakeups++
		p.lates = append(p.lates, late)
		if late > probeNoise {
			p.stalls[lane] = append(p.stalls[lane], probeStall{int64(due), int64(woke)})
		}
		p.mu.Unlock()
		select {
		case <-p.stop:
			return
		default:
		}
	}
}

// stopProbe ends the probe and waits for its goroutines; their last
// wakeups are recorded first. It may be called more than once.
func (p *relProbe) stopProbe() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.wg.Wait()
}

// starvedIn returns how long the probe found goroutines of the test binary
// unable to run within the window [from, to] (ns since t0): the most time
// one lane's stalls (each from when it was due to when it woke) cover
// inside the window, and the longest single stall overlapping it. A
// goroutine of the engine that was due in the window waited about as long.
func (p *relProbe) starvedIn(from, to int64) (total, longest time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, stalls := range p.stalls {
		// A lane's stalls are in time order and do not overlap (one
		// goroutine's successive sleeps): skip those that woke before the
		// window.
		var covered time.Duration
		i := sort.Search(len(stalls), func(i int) bool { return stalls[i].woke >= from })
		for ; i < len(stalls) && stalls[i].due <= to; i++ {
			s := stalls[i]
			covered += time.Duration(min(s.woke, to) - max(s.due, from))
			longest = max(longest, s.late())
		}
		total = max(total, covered)
	}
	return total, longest
}

// summary describes what the probe saw over the whole run.
func (p *relProbe) summary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.wakeups == 0 {
		return "probe: no wakeups"
	}
	lates := append([]time.Duration(nil), p.lates...)
	sort.Slice(lates, func(i, j int) bool { return lates[i] < lates[j] })
	pct := func(q float64) time.Duration { return lates[min(len(lates)-1, int(q*float64(len(lates))))] }
	worst, nstalls := probeStall{}, 0
	for _, stalls := range p.stalls {
		nstalls += len(stalls)
		for _, s := range stalls {
			if s.late() > worst.late() {
				worst = s
			}
		}
	}
	at := ""
	if worst.woke > 0 {
		at = fmt.Sprintf(" (due at %v)", time.Duration(worst.due).Round(time.Millisecond))
	}
	return fmt.Sprintf("probe: %d goroutines, %d wakeups every %v, late p50 %v p99 %v max %v%s; %d stalls over %v",
		len(p.stalls), p.wakeups, probeTick, pct(0.5).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond),
		lates[len(lates)-1].Round(10*time.Microsecond), at, nstalls, probeNoise)
}
