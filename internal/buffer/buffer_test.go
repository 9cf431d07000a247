package buffer_test

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/kpush/kpush/internal/buffer"
)

// waitTimeout bounds every wait in these tests; nothing should come close.
const waitTimeout = 5 * time.Second

var errStopped = errors.New("stopped")

type result struct {
	id  int
	err error
}

// startReserve runs Reserve on its own goroutine and reports on the returned
// channel. It returns only once that goroutine is parked in Reserve's wait
// (queued), so waiters started one after another are queued in that order.
func startReserve(t *testing.T, l *buffer.Limiter, id int, ctx context.Context, n int64, stop <-chan struct{}) <-chan result {
	t.Helper()
	ch := make(chan result, 1)
	startReserveTo(t, l, id, ctx, n, stop, ch)
	return ch
}

// startReserveTo is startReserve reporting on ch, which must have room.
func startReserveTo(t *testing.T, l *buffer.Limiter, id int, ctx context.Context, n int64, stop <-chan struct{}, ch chan result) {
	t.Helper()
	before := parkedInReserve()
	started := make(chan struct{})
	go func() {
		close(started)
		ch <- result{id, l.Reserve(ctx, n, stop, errStopped)}
	}()
	recv(t, started, "waiter goroutine start")
	waitCond(t, "waiter queued", func() bool { return parkedInReserve() > before || len(ch) > 0 })
	if len(ch) > 0 {
		t.Fatalf("waiter %d was not queued: Reserve returned at once", id)
	}
}

// parkedInReserve counts goroutines blocked in the select at the end of
// Reserve, that is, queued waiters.
func parkedInReserve() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		hdr, _, _ := bytes.Cut(g, []byte("\n"))
		if bytes.Contains(hdr, []byte("[select")) && bytes.Contains(g, []byte("buffer.(*Limiter).Reserve(")) {
			n++
		}
	}
	return n
}

// waitCond polls cond, yielding between tries, until it holds or the
// deadline passes.
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// notYet asserts that nothing arrived on ch so far, after letting other
// goroutines run.
func notYet[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	for range 100 {
		runtime.Gosched()
	}
	select {
	case v := <-ch:
		t.Fatalf("%s: got %v early", what, v)
	default:
	}
}

func checkUsed(t *testing.T, l *buffer.Limiter, wantBytes, wantRecs int64) {
	t.Helper()
	if b, r := l.Used(); b != wantBytes || r != wantRecs {
		t.Fatalf("Used() = (%d bytes, %d records), want (%d, %d)", b, r, wantBytes, wantRecs)
	}
}

func TestTryReserve_Limits(t *testing.T) {
	type step struct {
		release bool // Release(n) instead of TryReserve(n)
		n       int64
		ok      bool // expected TryReserve result
	}
	tests := []struct {
		name             string
		maxBytes, maxRec int64
		steps            []step
		wantB, wantR     int64
	}{
		{
			name: "records limit", maxBytes: 1000, maxRec: 3,
			steps: []step{{n: 1, ok: true}, {n: 1, ok: true}, {n: 1, ok: true}, {n: 1}, {release: true, n: 1}, {n: 1, ok: true}, {n: 1}},
			wantB: 3, wantR: 3,
		},
		{
			name: "bytes limit", maxBytes: 10, maxRec: 100,
			steps: []step{{n: 6, ok: true}, {n: 5}, {n: 4, ok: true}, {n: 1}, {release: true, n: 6}, {n: 7}, {n: 6, ok: true}},
			wantB: 10, wantR: 2,
		},
		{
			name: "exactly max bytes fits", maxBytes: 10, maxRec: 100,
			steps: []step{{n: 10, ok: true}, {n: 1}},
			wantB: 10, wantR: 1,
		},
		{
			name: "oversized record fits an empty buffer", maxBytes: 10, maxRec: 100,
			steps: []step{{n: 11, ok: true}, {n: 1}, {n: 0}},
			wantB: 11, wantR: 1,
		},
		{
			name: "oversized record does not fit a non-empty buffer", maxBytes: 10, maxRec: 100,
			steps: []step{{n: 1, ok: true}, {n: 11}, {release: true, n: 1}, {n: 11, ok: true}},
			wantB: 11, wantR: 1,
		},
		{
			name: "oversized record does not bypass the records limit", maxBytes: 10, maxRec: 1,
			steps: []step{{n: 0, ok: true}, {n: 11}},
			wantB: 0, wantR: 1,
		},
		{
			name: "limits clamped to the packed maximums", maxBytes: buffer.MaxBytes + 5, maxRec: buffer.MaxRecords + 5,
			steps: []step{{n: buffer.MaxBytes, ok: true}, {n: 1}},
			wantB: buffer.MaxBytes, wantR: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := buffer.New(tt.maxBytes, tt.maxRec)
			for i, s := range tt.steps {
				if s.release {
					l.Release(s.n)
					continue
				}
				if got := l.TryReserve(s.n); got != s.ok {
					b, r := l.Used()
					t.Fatalf("step %d: TryReserve(%d) = %v with (%d bytes, %d records) used, want %v", i, s.n, got, b, r, s.ok)
				}
			}
			checkUsed(t, l, tt.wantB, tt.wantR)
		})
	}
}

func TestReserve_FastPath(t *testing.T) {
	l := buffer.New(10, 10)
	if err := l.Reserve(context.Background(), 10, nil, errStopped); err != nil {
		t.Fatal(err)
	}
	checkUsed(t, l, 10, 1)
	l.Release(10)
	checkUsed(t, l, 0, 0)
}

func TestReserve_BlocksWhileFull(t *testing.T) {
	l := buffer.New(10, 100)
	if !l.TryReserve(8) {
		t.Fatal("TryReserve(8) on an empty buffer failed")
	}
	ch := startReserve(t, l, 1, context.Background(), 5, nil)
	notYet(t, ch, "Reserve(5) with 2 of 10 bytes free")
	// A queued waiter keeps later TryReserve calls out, even ones that fit.
	if l.TryReserve(1) {
		t.Fatal("TryReserve(1) succeeded ahead of a queued waiter")
	}
	l.Release(8)
	if r := recv(t, ch, "grant after Release"); r.err != nil {
		t.Fatal(r.err)
	}
	checkUsed(t, l, 5, 1)
}

func TestReserve_OversizedWaitsForEmpty(t *testing.T) {
	l := buffer.New(10, 100)
	l.TryReserve(1)
	l.TryReserve(1)
	ch := startReserve(t, l, 1, context.Background(), 50, nil)
	l.Release(1)
	notYet(t, ch, "oversized Reserve with one record still buffered")
	l.Release(1)
	if r := recv(t, ch, "oversized grant"); r.err != nil {
		t.Fatal(r.err)
	}
	checkUsed(t, l, 50, 1)
}

func TestReserve_FIFO(t *testing.T) {
	const n = 5
	l := buffer.New(100, 1) // one record at a time: exactly one waiter fits per Release
	if !l.TryReserve(1) {
		t.Fatal("TryReserve on an empty buffer failed")
	}
	// Sizes vary so a later, smaller waiter would fit first if order were
	// not kept.
	merged := make(chan result, n)
	for i := range n {
		startReserveTo(t, l, i, context.Background(), int64(n-i), nil, merged)
	}
	held := int64(1)
	for want := range n {
		l.Release(held)
		r := recv(t, merged, "next grant")
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.id != want {
			t.Fatalf("grant %d went to waiter %d, want waiter %d (FIFO)", want, r.id, want)
		}
		notYet(t, merged, "second grant while the record limit is reached")
		held = int64(n - r.id)
	}
	l.Release(held)
	checkUsed(t, l, 0, 0)
}

func TestReserve_NoBargingPastHead(t *testing.T) {
	l := buffer.New(10, 100)
	l.TryReserve(6)
	l.TryReserve(4)
	big := startReserve(t, l, 1, context.Background(), 6, nil)
	small := startReserve(t, l, 2, context.Background(), 4, nil)
	l.Release(4) // 4 bytes free: small would fit, but big is first
	notYet(t, small, "small waiter behind a head that does not fit")
	notYet(t, big, "head waiter that does not fit")
	l.Release(6) // now both fit, in order
	for _, ch := range []<-chan result{big, small} {
		if r := recv(t, ch, "grant"); r.err != nil {
			t.Fatal(r.err)
		}
	}
	checkUsed(t, l, 10, 2)
}

func TestReserve_ContextCancel(t *testing.T) {
	l := buffer.New(10, 100)
	l.TryReserve(10)
	ctx, cancel := context.WithCancel(context.Background())
	ch := startReserve(t, l, 1, ctx, 5, nil)
	cancel()
	if r := recv(t, ch, "Reserve after cancel"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Reserve = %v, want context.Canceled", r.err)
	}
	checkUsed(t, l, 10, 1)
	l.Release(10)
	checkUsed(t, l, 0, 0)
	// The abandoned waiter left the queue: the fast path works again.
	if !l.TryReserve(10) {
		t.Fatal("TryReserve(10) failed after the cancelled waiter left")
	}
}

func TestReserve_ContextDeadline(t *testing.T) {
	l := buffer.New(1, 1)
	l.TryReserve(1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := l.Reserve(ctx, 1, nil, errStopped); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Reserve = %v, want context.DeadlineExceeded", err)
	}
	l.Release(1)
	checkUsed(t, l, 0, 0)
}

func TestReserve_CancelledHeadUnblocksNext(t *testing.T) {
	l := buffer.New(10, 100)
	l.TryReserve(6)
	ctx, cancel := context.WithCancel(context.Background())
	head := startReserve(t, l, 1, ctx, 5, nil)
	next := startReserve(t, l, 2, context.Background(), 4, nil)
	notYet(t, next, "waiter behind the head")
	cancel()
	if r := recv(t, head, "cancelled head"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("head Reserve = %v, want context.Canceled", r.err)
	}
	if r := recv(t, next, "next waiter after head left"); r.err != nil {
		t.Fatal(r.err)
	}
	checkUsed(t, l, 10, 2)
}

func TestReserve_Stop(t *testing.T) {
	l := buffer.New(10, 100)
	l.TryReserve(10)
	stop := make(chan struct{})
	ch := startReserve(t, l, 1, context.Background(), 5, stop)
	close(stop)
	if r := recv(t, ch, "Reserve after stop"); !errors.Is(r.err, errStopped) {
		t.Fatalf("Reserve = %v, want stopErr", r.err)
	}
	l.Release(10)
	checkUsed(t, l, 0, 0)
	if !l.TryReserve(10) {
		t.Fatal("TryReserve(10) failed after the stopped waiter left")
	}
}

// A waiter granted space at the same moment its context is cancelled must
// either keep the space (nil error) or give it back (ctx error).
func TestReserve_GrantRacesCancel(t *testing.T) {
	iters := 5000
	if testing.Short() {
		iters = 500
	}
	var granted, cancelled int
	for i := range iters {
		l := buffer.New(1, 2)
		l.TryReserve(1)
		ctx, cancel := context.WithCancel(context.Background())
		ch := make(chan result, 1)
		go func() { ch <- result{i, l.Reserve(ctx, 1, nil, errStopped)} }()
		// A zero-byte record fits until the waiter is queued (TryReserve
		// then yields to it); cheaper than startReserve's stack scan.
		waitCond(t, "waiter queued", func() bool {
			if l.TryReserve(0) {
				l.Release(0)
				return false
			}
			return true
		})
		go0 := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { <-go0; l.Release(1) })
		wg.Go(func() { <-go0; cancel() })
		close(go0)
		r := recv(t, ch, "Reserve")
		wg.Wait()
		switch {
		case r.err == nil:
			granted++
			l.Release(1)
		case errors.Is(r.err, context.Canceled):
			cancelled++
		default:
			t.Fatalf("iteration %d: Reserve = %v", i, r.err)
		}
		if b, n := l.Used(); b != 0 || n != 0 {
			t.Fatalf("iteration %d (err %v): Used() = (%d, %d), want (0, 0)", i, r.err, b, n)
		}
		if !l.TryReserve(1) {
			t.Fatalf("iteration %d: space not usable afterwards", i)
		}
	}
	t.Logf("granted %d, cancelled %d", granted, cancelled)
}

// A Release racing a Reserve that is about to queue must not be lost: the
// waiter is granted without any further Release.
func TestReserve_ReleaseRacesQueueing(t *testing.T) {
	iters := 5000
	if testing.Short() {
		iters = 500
	}
	for i := range iters {
		l := buffer.New(1, 1)
		l.TryReserve(1)
		start := make(chan struct{})
		ch := make(chan error, 1)
		go func() { <-start; ch <- l.Reserve(context.Background(), 1, nil, errStopped) }()
		go func() { <-start; l.Release(1) }()
		close(start)
		if err := recv(t, ch, "Reserve racing the only Release (lost wake-up?)"); err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
		checkUsed(t, l, 1, 1)
	}
}

func TestWaitEmpty(t *testing.T) {
	t.Run("already empty", func(t *testing.T) {
		l := buffer.New(10, 10)
		if err := l.WaitEmpty(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("returns when the last record is released", func(t *testing.T) {
		l := buffer.New(10, 10)
		for range 3 {
			l.TryReserve(2)
		}
		const waiters = 3
		done := make(chan error, waiters)
		for range waiters {
			go func() { done <- l.WaitEmpty(context.Background()) }()
		}
		l.Release(2)
		l.Release(2)
		notYet(t, done, "WaitEmpty with one record left")
		l.Release(2)
		for range waiters {
			if err := recv(t, done, "WaitEmpty"); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("zero-byte record counts", func(t *testing.T) {
		l := buffer.New(10, 10)
		l.TryReserve(0)
		done := make(chan error, 1)
		go func() { done <- l.WaitEmpty(context.Background()) }()
		notYet(t, done, "WaitEmpty with a zero-byte record buffered")
		l.Release(0)
		if err := recv(t, done, "WaitEmpty"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("honours ctx", func(t *testing.T) {
		l := buffer.New(10, 10)
		l.TryReserve(1)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- l.WaitEmpty(ctx) }()
		notYet(t, done, "WaitEmpty before cancel")
		cancel()
		if err := recv(t, done, "WaitEmpty after cancel"); !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitEmpty = %v, want context.Canceled", err)
		}
		// A later WaitEmpty still works after an abandoned one.
		go func() { done <- l.WaitEmpty(context.Background()) }()
		l.Release(1)
		if err := recv(t, done, "second WaitEmpty"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("races the last release", func(t *testing.T) {
		for i := range 2000 {
			l := buffer.New(10, 10)
			l.TryReserve(1)
			start := make(chan struct{})
			done := make(chan error, 1)
			go func() { <-start; done <- l.WaitEmpty(context.Background()) }()
			go func() { <-start; l.Release(1) }()
			close(start)
			if err := recv(t, done, "WaitEmpty racing the last Release (lost wake-up?)"); err != nil {
				t.Fatalf("iteration %d: %v", i, err)
			}
		}
	})
	t.Run("refill before wake", func(t *testing.T) {
		// Records go to zero, then up again, repeatedly; each WaitEmpty
		// started while non-empty must return once empty for good.
		l := buffer.New(10, 10)
		for i := range 200 {
			l.TryReserve(1)
			done := make(chan error, 1)
			go func() { done <- l.WaitEmpty(context.Background()) }()
			l.TryReserve(1)
			l.Release(1)
			l.Release(1)
			if err := recv(t, done, "WaitEmpty"); err != nil {
				t.Fatalf("iteration %d: %v", i, err)
			}
		}
	})
}
