package buffer

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestTracker_WaitsOnlyForEarlierRecords: Wait returns once the records
// added before it are Done, while later records stay outstanding, and a
// second Wait still waits for records an earlier Wait sealed.
func TestTracker_WaitsOnlyForEarlierRecords(t *testing.T) {
	tr := NewTracker()
	a := tr.Add()
	b1 := tr.Seal() // waits for a
	later := tr.Add()
	b2 := tr.Seal() // waits for a and later

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := b1.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with a outstanding = %v, want DeadlineExceeded", err)
	}
	a.Done()
	if err := b1.Wait(context.Background()); err != nil {
		t.Fatalf("Wait after a is Done = %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	if err := b2.Wait(ctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Wait with later outstanding = %v, want DeadlineExceeded", err)
	}
	if n := tr.Pending(); n != 1 {
		t.Errorf("Pending = %d, want 1", n)
	}
	newer := tr.Add() // after both Seals: waited for by neither
	later.Done()
	if err := b2.Wait(context.Background()); err != nil {
		t.Fatalf("second Wait after later is Done = %v", err)
	}
	ctx3, cancel3 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel3()
	if err := tr.Wait(ctx3); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with newer outstanding = %v, want DeadlineExceeded", err)
	}
	newer.Done()
	if err := tr.Wait(context.Background()); err != nil {
		t.Fatalf("Wait with nothing outstanding = %v", err)
	}
}

// TestTracker_Concurrent: Adds, Dones and Seals race; every Wait returns
// once the records added before it are Done, and none hangs (run with
// -race).
func TestTracker_Concurrent(t *testing.T) {
	tr := NewTracker()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var held []*Gen
			for {
				select {
				case <-stop:
					for _, g := range held {
						g.Done()
					}
					return
				default:
				}
				held = append(held, tr.Add())
				if len(held) > 8 {
					held[0].Done()
					held = held[1:]
				}
			}
		}()
	}
	for range 200 {
		if err := tr.Wait(ctx); err != nil {
			t.Fatalf("Wait under load: %v", err)
		}
	}
	close(stop)
	wg.Wait()
	if err := tr.Wait(ctx); err != nil || tr.Pending() != 0 {
		t.Fatalf("after the load: Wait = %v, Pending = %d", err, tr.Pending())
	}
}

// BenchmarkUndelivered compares the per-record cost of the Flush
// accounting: the generation Tracker (Add + Done) against the Limiter it
// replaced (TryReserve + Release), from parallel goroutines.
func BenchmarkUndelivered(b *testing.B) {
	b.Run("Tracker", func(b *testing.B) {
		tr := NewTracker()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				tr.Add().Done()
			}
		})
	})
	b.Run("Limiter", func(b *testing.B) {
		l := New(MaxBytes, MaxRecords)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.TryReserve(0)
				l.Release(0)
			}
		})
	})
}

// TestBarrier_Done: Done reports a barrier whose records are all Done
// (or that had none), and not one with a record outstanding.
func TestBarrier_Done(t *testing.T) {
	tr := NewTracker()
	if b := tr.Seal(); !b.Done() {
		t.Fatal("Done of an empty tracker's barrier = false")
	}
	a := tr.Add()
	b := tr.Seal()
	if b.Done() {
		t.Fatal("Done with a record outstanding = true")
	}
	a.Done()
	if !b.Done() {
		t.Fatal("Done after the record is Done = false")
	}
}

// TestBarrier_DoneGenerationsWinOverADoneCtx: with every generation
// already done, Wait returns nil even if ctx is done too; a select over
// both would pick ctx's error about half the time, so 100 tries catch it.
func TestBarrier_DoneGenerationsWinOverADoneCtx(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tr := NewTracker()
	for i := range 100 {
		tr.Add().Done()
		if i%2 == 0 {
			tr.Seal() // a second, sealed generation, also done
		}
		if err := tr.Wait(ctx); err != nil {
			t.Fatalf("try %d: Wait with nothing outstanding and ctx done = %v, want nil", i, err)
		}
	}
}
