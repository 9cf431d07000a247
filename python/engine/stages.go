package main

// Goroutines and ownership (stage stamps): off unless KPUSH_ENGINE_STAGES
// names a file. Then every goroutine that touches a record (kp_send_many's
// caller, the engine's hook and callback goroutines, kp_drain's caller)
// stamps it under stageMu, and kp_profile_stop writes the stamps to that
// file as "id,stage,ns" lines (CLOCK_MONOTONIC, the clock of Python's
// time.monotonic_ns, so python/bench/stages.py joins both sides). A
// measuring aid for C=1 (python/docs/internals.md, "Fifth round"): it
// installs request hooks, which cost the engine a few clock readings.

/*
#include <stdint.h>
#include <time.h>
static int64_t kp_monotonic_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
*/
import "C"

import (
	"bufio"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kpush/kpush"
)

// Go-side stages, in the order a record at C=1 passes them.
const (
	stSendManyIn  = iota // kp_send_many entered
	stTryIn              // TrySendCancelable called (a lone record on an idle lane)
	stWritten            // its request written (OnRequestWritten)
	stSendManyOut        // kp_send_many returning
	stAnswered           // the response read (OnRequestAnswered)
	stQueued             // the completion appended to the queue
	stPipe               // push returned (the wake-up byte written, if armed)
	stDrainIn            // the kp_drain call that took it entered
	stDrainOut           // that kp_drain returning
	nStages
)

var stageNames = [nStages]string{"go_send_many_in", "go_try_in", "go_written", "go_send_many_out", "go_answered",
	"go_queued", "go_pipe", "go_drain_in", "go_drain_out"}

var (
	stagePath = os.Getenv("KPUSH_ENGINE_STAGES")
	stageOn   = stagePath != ""

	stageMu   sync.Mutex
	stageRows map[uint64]*[nStages]int64
	stageLast atomic.Uint64 // the last record kp_send_many took

	// monoBase and monoStart map Go's monotonic clock onto CLOCK_MONOTONIC
	// (both count the same ns; one cgo call at load).
	monoStart = time.Now()
	monoBase  = int64(C.kp_monotonic_ns())
)

func monoNow() int64 { return monoBase + int64(time.Since(monoStart)) }

func init() {
	if stageOn {
		stageRows = make(map[uint64]*[nStages]int64)
	}
}

// stamp records stage s of record id at t (stageOn only).
func stamp(id uint64, s int, t int64) {
	stageMu.Lock()
	r := stageRows[id]
	if r == nil {
		r = new([nStages]int64)
		stageRows[id] = r
	}
	if r[s] == 0 {
		r[s] = t
	}
	stageMu.Unlock()
}

// stageItems stamps every item of a kp_send_many call and remembers
// their records for the hook.
func stageItems(its []*item, s int, t int64) {
	stageMu.Lock()
	for _, it := range its {
		if s == stSendManyIn {
			stageLast.Store(it.id)
		}
		r := stageRows[it.id]
		if r == nil {
			r = new([nStages]int64)
			stageRows[it.id] = r
		}
		r[s] = t
	}
	stageMu.Unlock()
}

// stageHook stamps each request's write and answer on the record sent
// last (at C=1 the request's only record). It is a request hook, not a
// record hook: a record hook would turn TrySendCancelable's inline
// hand-over off (send_handle.go).
type stageHook struct{}

// OnRequestWritten stamps the write (called right after it).
func (stageHook) OnRequestWritten(kpush.RequestWrittenEvent) {
	stamp(stageLast.Load(), stWritten, monoNow())
}

// OnRequestAnswered stamps the answer (called after the response is
// read, before the records' outcomes are delivered).
func (stageHook) OnRequestAnswered(kpush.RequestAnsweredEvent) {
	stamp(stageLast.Load(), stAnswered, monoNow())
}

// writeStages writes the stamps (kp_profile_stop).
func writeStages() {
	if !stageOn {
		return
	}
	f, err := os.Create(stagePath)
	if err != nil {
		return
	}
	w := bufio.NewWriter(f)
	stageMu.Lock()
	for id, r := range stageRows {
		for s, t := range r {
			if t != 0 {
				fmt.Fprintf(w, "%d,%s,%d\n", id, stageNames[s], t)
			}
		}
	}
	stageMu.Unlock()
	w.Flush()
	f.Close()
}
