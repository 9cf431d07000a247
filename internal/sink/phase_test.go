package sink

// Regression tests for the partition state machine (issue 11), driving
// drain and handle directly. Each names the defect it guards.

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/internal/clock"
	"github.com/kpush/kpush/internal/idem"
)

// recordErr collects outcomes by record.
type recordErr struct{ errs map[*Pending]error }

func (c *recordErr) Notify(p *Pending) { c.errs[p] = p.Err }

// Defect 1: a retry batch that was definitely not written expires in drain
// with nothing in flight. The drain must go on and return the record
// queued behind it: returning no batch while leaving the partition on the
// ready list put the sink loop to sleep with nobody left to wake it.
func TestDrain_ExpiredRetryDoesNotStallPartition(t *testing.T) {
	s1, p, _, far := idemPartition()
	now := clock.Mono()
	var nt countN
	p.Add(newRec(&nt, now+int64(time.Second)))
	s1.takeReady()
	b, _, _, _ := p.drain(s1, 1, now, 1<<20)
	if b == nil {
		t.Fatal("no batch")
	}
	// NOT_ENOUGH_REPLICAS: refused before appending, retriable.
	s1.handle([]*Batch{b}, okResp("t", 0, kerr.NotEnoughReplicas.Code), nil, 0, false)
	p.Add(newRec(&nt, far))
	p.endBackoff() // the timer fires after the first record's deadline
	s1.takeReady()
	b2, exp, more, linger := p.drain(s1, 2, now+2*int64(time.Second), 1<<20)
	if len(exp) != 1 || !errors.Is(exp[0].Err, ErrDeliveryTimeout) {
		t.Fatalf("expired retry: got %d outcomes", len(exp))
	}
	if b2 == nil && linger == 0 {
		t.Fatalf("stall: drain returned no batch (more=%v) with a record buffered behind the expired retry: %s", more, p.DebugString())
	}
	if len(b2.recs) != 1 || b2.seq != 0 {
		t.Errorf("got %d records at seq %d, want 1 at seq 0 (the expired batch's sequence reused)", len(b2.recs), b2.seq)
	}
}

// Defect 11: after UNKNOWN_PRODUCER_ID (the broker lost our state, e.g.
// producer.id.expiration.ms) the partition must go back to one batch in
// flight until the broker acknowledges again: a broker without state
// takes any first sequence.
//
// And it sends nothing under the old ID until the new epoch is installed
// (phaseEpoch): neither the retry (refused again, or taken by a broker
// without state as a first batch the renumbering then does not know of)
// nor a new record (its sequence follows the refused ones). Then the
// retries go out renumbered from 0 under the new ID, one at a time.
func TestPartition_LostStateGoesBackToOneInFlight(t *testing.T) {
	s1, p, nt, far := idemPartition()
	pipelining(t, s1, p, nt, 1)
	a := sendOne(s1, p, nt, far, 2)
	b := sendOne(s1, p, nt, far, 3)
	if a == nil || b == nil {
		t.Fatalf("no pipelining after the first acknowledgement: %s", p.DebugString())
	}
	old := a.id
	s1.handle([]*Batch{a}, okResp("t", 0, kerr.UnknownProducerID.Code), nil, 0, false)
	s1.handle([]*Batch{b}, okResp("t", 0, kerr.OutOfOrderSequenceNumber.Code), nil, 0, false)
	p.endBackoff()
	if early := sendOne(s1, p, nt, far, 4); early != nil {
		t.Fatalf("batch at seq %d sent under the old ID %v before the new epoch: %s", early.seq, early.id, p.DebugString())
	}
	p.eng.idem.Set(idem.ID{Producer: old.Producer, Epoch: old.Epoch + 1})
	again := next(s1, p, 5)
	if again == nil || again.recs[0] != a.recs[0] || again.id == old || again.seq != 0 {
		t.Fatalf("first retry not resent at seq 0 under the new epoch: %s", p.DebugString())
	}
	if second := next(s1, p, 6); second != nil {
		t.Fatalf("two batches in flight after UNKNOWN_PRODUCER_ID before any acknowledgement: %s", p.DebugString())
	}
	s1.handle([]*Batch{again}, okResp("t", 0, 0), nil, 0, false)
	if bb := next(s1, p, 7); bb == nil || bb.recs[0] != b.recs[0] || bb.seq != 1 {
		t.Fatalf("second retry not resent at seq 1 under the new epoch: %s", p.DebugString())
	}
	checkPipelines(t, s1, p, nt, far, 8, "the broker acknowledged again")
}

// Defect 10: INVALID_RECORD naming some records of a batch (KIP-467,
// Produce v8+): only those fail; the others are resent at once, under the
// batch's first sequence, and the sequences after them close the gap.
func TestHandle_RecordErrorsFailOnlyNamedRecords(t *testing.T) {
	s1, p, _, far := idemPartition()
	out := &recordErr{errs: map[*Pending]error{}}
	var recs []*Pending
	for range 3 {
		r := newRec(out, far)
		recs = append(recs, r)
		p.Add(r)
	}
	b := next(s1, p, 1)
	if b == nil || len(b.recs) != 3 {
		t.Fatal("want one batch of 3")
	}
	resp := okResp("t", 0, kerr.InvalidRecord.Code)
	msg := "key is required for a compacted topic"
	er := kmsg.NewProduceResponseTopicPartitionErrorRecord()
	er.RelativeOffset, er.ErrorMessage = 1, &msg
	resp.Topics[0].Partitions[0].ErrorRecords = append(resp.Topics[0].Partitions[0].ErrorRecords, er)
	s1.handle([]*Batch{b}, resp, nil, 0, false)
	if len(out.errs) != 1 || !errors.Is(out.errs[recs[1]], kerr.InvalidRecord) {
		t.Fatalf("outcomes %v, want only record 1 failed with INVALID_RECORD", out.errs)
	}
	again := next(s1, p, 2)
	if again == nil || len(again.recs) != 2 || again.recs[0] != recs[0] || again.recs[1] != recs[2] || again.seq != 0 {
		t.Fatalf("the two good records were not resent at seq 0: %s", p.DebugString())
	}
	s1.handle([]*Batch{again}, okResp("t", 0, 0), nil, 0, false)
	next := sendOne(s1, p, out, far, 3)
	if next == nil || next.seq != 2 {
		t.Errorf("next batch: %v, want seq 2 (no gap after the dropped record): %s", next != nil, p.DebugString())
	}
	if len(out.errs) != 3 || out.errs[recs[0]] != nil || out.errs[recs[2]] != nil {
		t.Errorf("good records: %v", out.errs)
	}
}

// Defect 4: another partition's epoch bump must not fail this partition's
// retry (outcome unknown after a connection cut) with ErrSequenceReset: the
// broker still holds the old ID's state here, so the retry goes out under
// the old ID first; new records follow under the new one.
func TestDrain_OtherPartitionsBumpKeepsOldIDRetry(t *testing.T) {
	s1, p, _, far := idemPartition()
	out := &recordErr{errs: map[*Pending]error{}}
	r := newRec(out, far)
	p.Add(r)
	b := next(s1, p, 1)
	old := b.id
	s1.handle([]*Batch{b}, nil, fmt.Errorf("connection reset"), 0, false) // maybe written
	p.eng.idem.Set(idem.ID{Producer: old.Producer, Epoch: old.Epoch + 1})
	p.endBackoff()
	p.Add(newRec(out, far))
	s1.takeReady()
	again, exp, _, _ := p.drain(s1, 2, clock.Mono(), 1<<20)
	for _, e := range exp {
		t.Errorf("record failed: %v", e.Err)
	}
	if again == nil || again.id != old || again.recs[0] != r {
		t.Fatalf("retry not resent under the old producer ID: %s", p.DebugString())
	}
	if nb := next(s1, p, 3); nb != nil {
		t.Fatalf("new batch sent while the old ID's retry is in flight: %s", p.DebugString())
	}
	s1.handle([]*Batch{again}, okResp("t", 0, 0), nil, 0, false)
	nb := next(s1, p, 4)
	if nb == nil || nb.id == old || nb.seq != 0 {
		t.Errorf("new record not sent under the new ID at seq 0: %s", p.DebugString())
	}
	if out.errs[r] != nil {
		t.Errorf("retried record: %v", out.errs[r])
	}
}

// A backoff waits for the retries: once the reaper has expired every retry
// batch, records buffered behind them go out at once instead of waiting out
// a backoff (up to 1 s) that could outlast their own delivery timeout.
func TestExpire_DroppedRetriesEndBackoff(t *testing.T) {
	s1, p, nt, far := idemPartition()
	now := clock.Mono()
	p.Add(newRec(nt, now+int64(time.Second)))
	s1.takeReady()
	b, _, _, _ := p.drain(s1, 1, now, 1<<20)
	s1.handle([]*Batch{b}, okResp("t", 0, kerr.NotEnoughReplicas.Code), nil, 0, false) // backoff (an hour in tests)
	p.Add(newRec(nt, far))
	if out, _, _, _ := p.expireDue(now + 2*int64(time.Second)); len(out) != 1 {
		t.Fatalf("expired %d records, want the retry's one", len(out))
	}
	if parts := s1.takeReady(); len(parts) != 1 {
		t.Fatalf("partition not ready after its only retry expired: %s", p.DebugString())
	}
	if b2, _, _, _ := p.drain(s1, 2, now+2*int64(time.Second), 1<<20); b2 == nil {
		t.Errorf("buffered record waits for a backoff with no retry left: %s", p.DebugString())
	}
}

// A canceled record's buffer space is released exactly once, when its
// partition drops it (not when Cancel runs), on every path that drops it:
// compaction, drain, expiry and close.
func TestCancel_SpaceReleasedOnceWhenDropped(t *testing.T) {
	var released, releasedRecs int64
	e := NewEngine(Config{MaxBatchBytes: 1 << 20, RetryBackoff: time.Hour, MaxInflight: 5, Acks: -1,
		ReleaseCanceled: func(n int, b int64) { releasedRecs += int64(n); released += b }}, idem.NewLoaded(idem.ID{Producer: 1}))
	s1 := &Sink{eng: e, Node: 1}
	p := e.NewPartitionQueue("t", 0)
	p.SetLeader(s1)
	var nt countN
	now := clock.Mono()
	var recs []*Pending
	add := func(n int, deadline int64) {
		for range n {
			r := newRec(&nt, deadline)
			recs = append(recs, r)
			p.Add(r)
		}
	}
	add(4, now+int64(time.Hour))
	if !p.Cancel(recs[0]) || released != 0 {
		t.Fatalf("space released at Cancel (%d bytes), before the record left the queue", released)
	}
	p.Cancel(recs[1])
	p.Cancel(recs[2]) // three of four canceled: compacted now
	if releasedRecs != 3 || released != 30 {
		t.Fatalf("after compaction: %d records, %d bytes released, want 3, 30", releasedRecs, released)
	}
	add(2, now+int64(time.Hour))
	p.Cancel(recs[4])
	s1.takeReady()
	b, _, _, _ := p.drain(s1, 1, now, 1<<20) // drops the canceled record it meets
	if b == nil || len(b.recs) != 2 || releasedRecs != 4 {
		t.Fatalf("drain: batch %v, %d released, want 2 records and 4 released", b != nil, releasedRecs)
	}
	add(2, now+int64(time.Second))
	p.Cancel(recs[6])
	p.expireDue(now + 2*int64(time.Second))
	add(2, now+int64(time.Hour))
	p.Cancel(recs[8])
	p.failBuffered(errors.New("closed"), true)
	if releasedRecs != 6 || released != 60 {
		t.Errorf("%d records, %d bytes released for 6 canceled records of 10 bytes", releasedRecs, released)
	}
	if p.Cancel(recs[9]) {
		t.Error("Cancel succeeded on a record that already has an outcome")
	}
}

// An outcome-unknown retry (its request's connection broke) expires with
// nothing in flight: its sequence is lost to the broker's view only if it
// was not written, so only a new epoch makes the next sequence safe
// (dropSeqLocked asks for one). Until the bump is installed the partition
// sends nothing under the old ID — a new record there would follow a
// sequence the broker may never have seen — and then starts from 0.
//
// "while sending": the retry's backoff has ended before it expires, so the
// partition is in a sending phase with the retry waiting when the reaper
// drops it, and must enter the epoch wait there (evBumpAsked), not only at
// the end of a rewind or backoff.
func TestExpire_UnknownRetryDroppedWaitsForEpoch(t *testing.T) {
	for _, tc := range []struct {
		name       string
		endBackoff bool
	}{{"in backoff", false}, {"while sending", true}} {
		t.Run(tc.name, func(t *testing.T) {
			s1, p, nt, far := idemPartition()
			now := clock.Mono()
			p.Add(newRec(nt, now+int64(time.Second)))
			s1.takeReady()
			b, _, _, _ := p.drain(s1, 1, now, 1<<20)
			if b == nil {
				t.Fatal("no batch")
			}
			old := b.id
			s1.handle([]*Batch{b}, nil, fmt.Errorf("connection reset"), 0, false) // maybe written
			if tc.endBackoff {
				p.endBackoff()
			}
			if out, _, _, _ := p.expireDue(now + 2*int64(time.Second)); len(out) != 1 || !errors.Is(out[0].Err, ErrDeliveryTimeout) {
				t.Fatalf("expired %d records, want the unknown retry's one", len(out))
			}
			if early := sendOne(s1, p, nt, far, 2); early != nil {
				t.Fatalf("new record sent at seq %d under the old ID %v before the new epoch: %s", early.seq, early.id, p.DebugString())
			}
			p.eng.idem.Set(idem.ID{Producer: old.Producer, Epoch: old.Epoch + 1})
			nb := next(s1, p, 3)
			if nb == nil || nb.id == old || nb.seq != 0 {
				t.Fatalf("new record not sent at seq 0 under the new epoch: %s", p.DebugString())
			}
		})
	}
}
