package kpush

import (
	"context"
	"testing"
	"time"

	"github.com/kpush/kpush/kafkatest"
)

// panicHook panics in the record hook named by at, for records whose
// value is "boom".
type panicHook struct{ at string }

func (h panicHook) boom(r *Record, at string) {
	if h.at == at && string(r.Value) == "boom" {
		panic("user " + at)
	}
}

func (h panicHook) OnRecordSend(_ context.Context, r *Record) { h.boom(r, "send") }
func (h panicHook) OnRecordBuffered(ev RecordBufferedEvent)   { h.boom(ev.Record, "buffered") }
func (h panicHook) OnRecordDone(ev RecordDoneEvent)           { h.boom(ev.Record, "done") }

// TestPanic_HookedSendAsyncKeepsNoSlabRecordNorLoad: SendAsync with record
// hooks takes its slab record before any user code runs; when that user
// code panics (a hook, a custom partitioner), the record is not buffered
// and its slab record must be given back, and a load counted on its
// partition taken off again. A leaked slab record keeps its whole slab
// from ever being freed; a leaked load keeps a partition looking backed up
// to the adaptive partitioner forever. The public-API panic test cannot
// see either.
func TestPanic_HookedSendAsyncKeepsNoSlabRecordNorLoad(t *testing.T) {
	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("pl", 2))
	partitioned := PartitionerFunc(func(_ string, r *Record, _ int) int {
		if string(r.Value) == "boom" {
			panic("user partitioner")
		}
		return 0
	})
	for _, tc := range []struct {
		name   string
		at     string
		custom bool    // a custom partitioner (no load counters)
		rec    *Record // the record whose user code panics
	}{
		{"OnRecordSend", "send", false, &Record{Topic: "pl", Value: []byte("boom")}},
		{"OnRecordBuffered", "buffered", false, &Record{Topic: "pl", Value: []byte("boom")}},
		{"OnRecordDone unbuffered", "done", false, &Record{Value: []byte("boom")}}, // ErrNoTopic
		{"partitioner", "", true, &Record{Topic: "pl", Value: []byte("boom")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []Option{WithBrokers(c.Addrs()...), WithHooks(panicHook{at: tc.at})}
			if tc.custom {
				opts = append(opts, WithPartitioner(partitioned))
			}
			p, err := New(opts...)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			defer p.Close(ctx)
			if _, err := p.Send(ctx, &Record{Topic: "pl", Value: []byte("warm")}); err != nil {
				t.Fatal(err)
			}
			func() {
				defer func() {
					if recover() == nil {
						t.Fatal("the user code's panic did not reach the caller")
					}
				}()
				p.SendAsync(ctx, tc.rec, nil)
			}()
			if err := p.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if n := busyRecords(p); n != 0 {
				t.Errorf("after the panic and Flush: %d slab records busy, want 0", n)
			}
			if !tc.custom {
				wantNoLoad(t, p, "pl", "after the panic and Flush")
			}
		})
	}
}
