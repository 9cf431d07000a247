package kpush_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// boom is the value of the records the panicking user code panics for.
const boom = "boom"

type panicOnSend struct{}

func (panicOnSend) OnRecordSend(_ context.Context, r *kpush.Record) {
	if string(r.Value) == boom {
		panic("user OnRecordSend")
	}
}

type panicOnBuffered struct{}

func (panicOnBuffered) OnRecordBuffered(ev kpush.RecordBufferedEvent) {
	if string(ev.Record.Value) == boom {
		panic("user OnRecordBuffered")
	}
}

type panicOnDone struct{}

func (panicOnDone) OnRecordDone(ev kpush.RecordDoneEvent) {
	if string(ev.Record.Value) == boom {
		panic("user OnRecordDone")
	}
}

// panicPartitioner panics for boom records, else picks partition 0.
var panicPartitioner = kpush.PartitionerFunc(func(_ string, r *kpush.Record, _ int) int {
	if string(r.Value) == boom {
		panic("user partitioner")
	}
	return 0
})

// TestPanic_OnCallersGoroutineLeavesProducerUsable: user code kpush runs
// on the caller's goroutine (record hooks, a custom partitioner, the
// callback of a record that failed before it was buffered) panics; the
// panic reaches the caller, and the producer keeps nothing of the record:
// later sends work, Flush returns, no bytes or records stay buffered, a
// failure is counted before the user code ran, and Close is clean.
func TestPanic_OnCallersGoroutineLeavesProducerUsable(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("p", 2))
	rec := func() *kpush.Record { return &kpush.Record{Topic: "p", Value: []byte(boom)} }
	noTopic := func() *kpush.Record { return &kpush.Record{Value: []byte(boom)} } // fails unbuffered: ErrNoTopic
	send := func(p *kpush.Producer, r *kpush.Record) { _, _ = p.Send(context.Background(), r) }
	async := func(p *kpush.Producer, r *kpush.Record) { p.SendAsync(context.Background(), r, nil) }
	cancelable := func(p *kpush.Producer, r *kpush.Record) { p.SendCancelable(context.Background(), r, nil) }
	panicCb := func(kpush.Result, error) { panic("user callback") }
	cases := []struct {
		name   string
		opt    kpush.Option
		send   func(*kpush.Producer)
		failed bool // the record is counted failed
	}{
		{"OnRecordSend/Send", kpush.WithHooks(panicOnSend{}), func(p *kpush.Producer) { send(p, rec()) }, false},
		{"OnRecordSend/SendAsync", kpush.WithHooks(panicOnSend{}), func(p *kpush.Producer) { async(p, rec()) }, false},
		{"OnRecordSend/SendCancelable", kpush.WithHooks(panicOnSend{}), func(p *kpush.Producer) { cancelable(p, rec()) }, false},
		{"OnRecordBuffered/Send", kpush.WithHooks(panicOnBuffered{}), func(p *kpush.Producer) { send(p, rec()) }, true},
		{"OnRecordBuffered/SendAsync", kpush.WithHooks(panicOnBuffered{}), func(p *kpush.Producer) { async(p, rec()) }, true},
		{"OnRecordBuffered/SendCancelable", kpush.WithHooks(panicOnBuffered{}), func(p *kpush.Producer) { cancelable(p, rec()) }, true},
		{"OnRecordDone/Send unbuffered", kpush.WithHooks(panicOnDone{}), func(p *kpush.Producer) { send(p, noTopic()) }, true},
		{"OnRecordDone/SendAsync unbuffered", kpush.WithHooks(panicOnDone{}), func(p *kpush.Producer) { async(p, noTopic()) }, true},
		{"OnRecordDone/SendCancelable unbuffered", kpush.WithHooks(panicOnDone{}), func(p *kpush.Producer) { cancelable(p, noTopic()) }, true},
		{"partitioner/Send", kpush.WithPartitioner(panicPartitioner), func(p *kpush.Producer) { send(p, rec()) }, false},
		{"partitioner/SendAsync", kpush.WithPartitioner(panicPartitioner), func(p *kpush.Producer) { async(p, rec()) }, false},
		{"partitioner/SendAsync hooked", kpush.WithPartitioner(panicPartitioner), func(p *kpush.Producer) { async(p, rec()) }, false},
		{"partitioner/SendCancelable", kpush.WithPartitioner(panicPartitioner), func(p *kpush.Producer) { cancelable(p, rec()) }, false},
		{"partitioner/TrySendCancelable", kpush.WithPartitioner(panicPartitioner), func(p *kpush.Producer) { p.TrySendCancelable(rec(), nil) }, false},
		{"callback/SendAsync unbuffered", nil, func(p *kpush.Producer) { p.SendAsync(context.Background(), noTopic(), panicCb) }, true},
		{"callback/TrySendCancelable unbuffered", nil, func(p *kpush.Producer) { p.TrySendCancelable(noTopic(), panicCb) }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := []kpush.Option{kpush.WithBrokers(c.Addrs()...)}
			if tc.opt != nil {
				opts = append(opts, tc.opt)
			}
			if strings.HasSuffix(tc.name, "hooked") {
				opts = append(opts, kpush.WithHooks(panicOnDone{})) // SendAsync's hooked path
			}
			p, err := kpush.New(opts...)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// Warm up: the topic's metadata is there, so TrySendCancelable
			// does not refuse for want of it.
			if _, err := p.Send(ctx, &kpush.Record{Topic: "p", Value: []byte("warm")}); err != nil {
				t.Fatal(err)
			}
			before := p.Stats().RecordsFailed
			func() {
				defer func() {
					if recover() == nil {
						t.Error("the user code's panic did not reach the caller")
					}
				}()
				tc.send(p)
			}()
			want := int64(0)
			if tc.failed {
				want = 1
			}
			if got := p.Stats().RecordsFailed - before; got != want {
				t.Errorf("%d records counted failed, want %d", got, want)
			}
			for range 200 { // more than a slab of SendAsync records
				p.SendAsync(ctx, &kpush.Record{Topic: "p", Value: []byte("after")}, func(_ kpush.Result, err error) {
					if err != nil {
						t.Error(err)
					}
				})
			}
			if _, err := p.Send(ctx, &kpush.Record{Topic: "p", Value: []byte("after")}); err != nil {
				t.Fatalf("Send after the panic: %v", err)
			}
			fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
			defer fcancel()
			if err := p.Flush(fctx); err != nil {
				t.Errorf("Flush after the panic: %v", err)
				return // Close would wait for the leaked record too
			}
			if st := p.Stats(); st.RecordsBuffered != 0 || st.BytesBuffered != 0 {
				t.Errorf("after Flush: %d records, %d bytes still buffered", st.RecordsBuffered, st.BytesBuffered)
			}
			if err := p.Close(ctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

// TestPanic_OnKpushGoroutineCrashes documents the other half of the
// contract: a callback kpush runs on its own goroutine (here SendAsync's,
// for a record that was buffered) that panics crashes the process, as any
// unrecovered panic in a goroutine does. The test runs itself as a child.
func TestPanic_OnKpushGoroutineCrashes(t *testing.T) {
	const msg = "user callback on a kpush goroutine"
	if os.Getenv("KPUSH_PANIC_CHILD") == "1" {
		c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("p", 1))
		p := newProducer(t, c)
		p.SendAsync(context.Background(), &kpush.Record{Topic: "p", Value: []byte("v")}, func(kpush.Result, error) { panic(msg) })
		time.Sleep(30 * time.Second) // the panic ends the process first
		t.Fatal("the callback's panic did not crash the process")
	}
	expectChildPanic(t, "^TestPanic_OnKpushGoroutineCrashes$", msg)
}

// panicOnWrite is a request hook that panics when a request is written.
type panicOnWrite string

func (m panicOnWrite) OnRequestWritten(kpush.RequestWrittenEvent) { panic(string(m)) }

// TestPanic_OnSinkLoopHoldingItsConnectionCrashes: a hook panicking on a
// sink's loop while it writes a request (holding the sink's own lock)
// crashes the process too. The loop's exit path takes that lock; before it
// re-panicked first, the panic deadlocked there and the program hung with
// the sink stopped, silently.
func TestPanic_OnSinkLoopHoldingItsConnectionCrashes(t *testing.T) {
	const msg = "request hook on the sink loop"
	if os.Getenv("KPUSH_PANIC_CHILD") == "1" {
		c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("p", 1))
		p := newProducer(t, c, kpush.WithHooks(panicOnWrite(msg)))
		// SendAsync never writes on the caller's goroutine: the loop does.
		p.SendAsync(context.Background(), &kpush.Record{Topic: "p", Value: []byte("v")}, func(kpush.Result, error) {})
		time.Sleep(20 * time.Second) // the panic ends the process first
		// Not t.Fatal: its cleanups would Close the producer, which waits
		// for the stuck loop, and the child would never exit.
		os.Stderr.WriteString("the hook's panic on the sink loop did not crash the process\n")
		os.Exit(3)
	}
	expectChildPanic(t, "^TestPanic_OnSinkLoopHoldingItsConnectionCrashes$", msg)
}

// expectChildPanic runs the test named by run in a child process (with
// KPUSH_PANIC_CHILD=1) and fails unless the child died panicking with msg.
func expectChildPanic(t *testing.T, run, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a hung child still ends
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run="+run, "-test.count=1")
	cmd.Env = append(os.Environ(), "KPUSH_PANIC_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("child exited 0; output:\n%s", out)
	}
	if !strings.Contains(string(out), "panic: "+msg) {
		t.Fatalf("child (%v) did not panic with %q; output:\n%s", err, msg, out)
	}
}
