package kpush

import (
	"testing"

	"github.com/kpush/kpush/internal/idem"
)

// TestRequestBump_CurrentIDNotLostBehindStale: a partition that still has
// retries under an old producer ID asks for a bump of that ID after the
// producer already moved on (a stale request: Bump ignores it). A
// partition on the current ID that asks before the metadata goroutine
// takes the request must not be coalesced into the stale one: it waits in
// phaseEpoch for a new ID and, with its request lost, would wait until
// every record it gets expires.
func TestRequestBump_CurrentIDNotLostBehindStale(t *testing.T) {
	id1 := idem.ID{Producer: 7, Epoch: 0}
	id2 := idem.ID{Producer: 7, Epoch: 1}
	p := &Producer{idem: idem.NewLoaded(id2)}
	p.requestBump(id1) // stale: the ID moved on from id1
	p.requestBump(id2) // current: a partition waits for it
	if p.bump == nil || *p.bump != id2 {
		t.Fatalf("pending bump %v, want the current ID %v (the stale %v is a no-op)", p.bump, id2, id1)
	}
	p.requestBump(id1) // stale again: keeps the current request
	if *p.bump != id2 {
		t.Fatalf("pending bump %v after a stale request, want %v", *p.bump, id2)
	}
}
