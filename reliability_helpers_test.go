package kpush_test

// Machinery for the reliability scenarios (reliability_test.go): the
// scenario description (relScenario), the running scenario's environment
// (relEnv) and its records. The other jobs have files of their own: the
// runner that sends keyed records from many goroutines while faults are
// injected (reliability_run_test.go), the outcomes and the model check
// (reliability_model_test.go), the invariants (reliability_invariants_test.go),
// the scheduler-starvation probe the lateness check uses
// (reliability_probe_test.go), the network layer under the fake brokers that
// can see, drop, rewrite and refuse traffic (reliability_net_test.go) and the
// report (reliability_report_test.go).
//
// Faults are injected in proportion to traffic: from the one produce control
// the runner installs (every Nth request), from the response hook (every Nth
// response), or from outcome counts. Nothing fires on a timer.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// ---------------------------------------------------------------------------

// Scenarios and their environment.

type relOutcome uint8

const (
	relPending relOutcome = iota
	relAcked
	relNotWritten
	relUnknown
)

type relLoc struct {
	part   int32
	offset int64
}

type relRecord struct {
	calls   atomic.Int32 // outcomes delivered; must be exactly 1
	outcome relOutcome
	loc     relLoc
	err     error
	start   int64 // ns since the run began: Send called
	end     int64 // ns since the run began: outcome delivered
	// deadline: ns since the run began by which the outcome is due
	// (before deadlineSlack); seqReset: the error is ErrSequenceReset;
	// reached: a produce request holding the record went on to the broker.
	deadline int64
	seqReset bool
	reached  atomic.Bool

	// Filled by the read-back.
	seen  int
	found relLoc
}

// relScenario describes one fault scenario; all hooks are optional.
type relScenario struct {
	name       string
	brokers    int
	partitions int32
	noTopic    bool // the topic does not exist when sending starts
	keys       int  // sender goroutines, one key each
	perKey     int  // records per key (default run)
	// window > 0 makes odd keys send asynchronously with up to window
	// records outstanding (even keys send synchronously, one at a time);
	// allAsync makes every key asynchronous.
	window   int
	allAsync bool
	// windowDiv > 0 sets the window to records per key / windowDiv.
	windowDiv int
	opts      []kpush.Option
	// delivery is the producer's delivery timeout (default 30s) and
	// maxBufBytes its WithMaxBufferedBytes (default kpush's); the runner
	// sets both, for the deadline and memory invariants to know them.
	delivery    time.Duration
	maxBufBytes int64
	// valuePad makes each record's value that many bytes longer.
	valuePad int
	// retriedWrites: the broker may apply a batch and still answer with an
	// error (or lose the answer), so the retry of an earlier batch can be
	// acknowledged after a later one. kpush runs callbacks as outcomes
	// arrive, so their offset order then breaks: reported as the
	// "callback order after a retried write" kind (awaitingFix).
	retriedWrites bool
	// awaits names the awaitingFix defect the whole scenario reproduces:
	// it is skipped until the fix merges.
	awaits string
	// stallDefect names the awaitingFix defect a stall of the senders
	// reproduces: while it awaits its fix, a stall skips the scenario.
	stallDefect string
	// noScale keeps perKey as given: the scenario is about time (faults
	// longer than the delivery timeout), not volume.
	noScale  bool
	stall    time.Duration // bound on the sending phase (default 30s)
	minAcked float64       // fraction of records that must be acknowledged
	noRead   bool          // the cluster cannot be read back (closed)
	// skip names an engine bug this scenario reproduces; it is skipped
	// unless KPUSH_REL_BUGS=1.
	skip string
	// strictSeqReset makes ErrSequenceReset an error like any other; by
	// default it is allowed and counted: after an epoch bump, a record
	// whose earlier attempt may have been written can only honestly be
	// reported unknown (see 05b).
	strictSeqReset bool

	setup     func(e *relEnv)                                                                 // before the producer exists
	onProduce func(e *relEnv, n int64, req *kmsg.ProduceRequest) (kmsg.Response, error, bool) // the one produce control
	onResp    func(e *relEnv, c *relConn, key, version int16, frame []byte) ([]byte, bool)    // network hook
	ctxFor    func(e *relEnv, k, i int, rng *rand.Rand) (context.Context, context.CancelFunc) // per-record ctx
	perRecord func(e *relEnv, k, i int)                                                       // after each Send/SendAsync call
	onOutcome func(e *relEnv, k, i int, r *relRecord)                                         // after each outcome; concurrent
	checkErr  func(e *relEnv, k, i int, err error) error                                      // is this error allowed here?
	finish    func(e *relEnv)                                                                 // senders done, faults quiet, before read-back
	after     func(e *relEnv)                                                                 // after the model check
	state     func() string                                                                   // scenario state for stall reports
}

// relEnv is one running scenario.
type relEnv struct {
	t     *testing.T
	sc    *relScenario
	c     *kafkatest.Cluster
	f     *kfake.Cluster
	net   *relNet
	p     *kpush.Producer
	topic string
	ports map[int32]int // node ID → port
	ctx   context.Context
	done  chan struct{} // closed at cleanup, before the cluster closes: wakes held requests
	t0    time.Time
	log   *relLogBuf

	keys, perKey int
	recs         [][]relRecord

	produceReqs atomic.Int64 // produce requests seen by the cluster
	sawCut      atomic.Bool  // a produce request was answered by cutting its connection
	outcomes    atomic.Int64
	acked       atomic.Int64
	extra       atomic.Int64 // outcomes delivered more than once
	seqResets   atomic.Int64 // ErrSequenceReset outcomes (unknown; see 05b)
	quiet       atomic.Bool  // fault injection stopped

	summary *scenarioRow // set by report
	inv     relInv       // reliability_invariants_test.go

	vmu        sync.Mutex
	violations map[string]int
	examples   []string
	notes      []string
}

func (e *relEnv) now() int64 { return int64(time.Since(e.t0)) }

// violate records a model violation; the test fails at the end with the
// first examples of each kind.
func (e *relEnv) violate(kind, format string, args ...any) {
	e.vmu.Lock()
	defer e.vmu.Unlock()
	e.violations[kind]++
	if e.violations[kind] <= 3 {
		e.examples = append(e.examples, kind+": "+fmt.Sprintf(format, args...))
	}
}

// note adds a fact to the scenario's summary line.
func (e *relEnv) note(format string, args ...any) {
	e.vmu.Lock()
	defer e.vmu.Unlock()
	e.notes = append(e.notes, fmt.Sprintf(format, args...))
}

func (e *relEnv) records() int { return e.keys * e.perKey }

// value and key of record i of key k: "k/i", then "/" and padding if the
// scenario asks for it.
func (e *relEnv) value(k, i int) []byte {
	v := []byte(strconv.Itoa(k) + "/" + strconv.Itoa(i))
	if e.sc.valuePad > 0 {
		v = append(append(v, '/'), strings.Repeat("p", e.sc.valuePad)...)
	}
	return v
}
func relKey(k int) []byte { return []byte("key-" + strconv.Itoa(k)) }

// parseValue returns the key and record number a value names.
func (e *relEnv) parseValue(v []byte) (k, i int, ok bool) {
	ks, rest, ok := strings.Cut(string(v), "/")
	is, _, _ := strings.Cut(rest, "/")
	k, err1 := strconv.Atoi(ks)
	i, err2 := strconv.Atoi(is)
	if !ok || err1 != nil || err2 != nil || k < 0 || k >= e.keys || i < 0 || i >= e.perKey {
		return 0, 0, false
	}
	return k, i, true
}

// relTarget is the least number of records each scenario sends: 100,000
// by default, 1,000,000 with -kpush.long, 10,000 with -short or the race
// detector.
func relTarget() int {
	switch {
	case *relLong:
		return 1_000_000
	case testing.Short(), raceEnabled:
		return 10_000
	}
	return 100_000
}

// relPerKey scales a scenario's records per key so that it sends at least
// relTarget records, and returns the factor its time bounds grow by.
func relPerKey(sc *relScenario) (perKey, scale int) {
	if sc.noScale {
		return sc.perKey, 1
	}
	target := relTarget()
	perKey = max(sc.perKey, (target+sc.keys-1)/sc.keys)
	return perKey, (perKey + sc.perKey - 1) / sc.perKey
}

type relLogBuf struct {
	mu   sync.Mutex
	b    []byte
	full strings.Builder
}

// Write keeps the last 64 KiB of the producer's debug log.
func (l *relLogBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if os.Getenv("KPUSH_REL_LOG") != "" {
		l.full.Write(p)
	}
	if len(l.b) > 128<<10 {
		l.b = append(l.b[:0], l.b[len(l.b)-64<<10:]...)
	}
	return len(p), nil
}

func (l *relLogBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
