package kotel

import (
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/kpush/kpush"
)

// outcomeEvents are record outcomes of three attribute combinations.
var outcomeEvents = []kpush.RecordDoneEvent{
	{Topic: "x", Partition: 0, Elapsed: time.Millisecond},
	{Topic: "y", Partition: 1, Elapsed: time.Millisecond},
	{Topic: "x", Partition: 0, Err: &kpush.ProduceError{Topic: "x", Err: kerr.NotEnoughReplicas}, Elapsed: time.Millisecond},
	{Topic: "x", Partition: -1, Err: &kpush.ProduceError{Topic: "x", Partition: -1, Err: errors.New("odd")}, Elapsed: time.Millisecond},
}

// TestMeter_OutcomeAllocatesNothing: once an outcome's attribute
// combination was seen, the meter's own work for it (finding its cached
// attribute set) allocates nothing.
func TestMeter_OutcomeAllocatesNothing(t *testing.T) {
	m, err := newMeter(sdkmetric.NewMeterProvider(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range outcomeEvents {
		m.recordOpts(ev.Topic, ev.Partition, ev.Err)
	}
	if raceEnabled {
		return
	}
	if a := testing.AllocsPerRun(1000, func() {
		for _, ev := range outcomeEvents {
			m.recordOpts(ev.Topic, ev.Partition, ev.Err)
		}
	}); a != 0 {
		t.Errorf("%v allocations per %d cached outcomes, want 0", a, len(outcomeEvents))
	}
}

// BenchmarkMeter_OnRecordDone: the meter's cost per record outcome
// (acknowledged, one topic and partition, from all CPUs), with the SDK's
// meter provider and no reader.
func BenchmarkMeter_OnRecordDone(b *testing.B) {
	m, err := newMeter(sdkmetric.NewMeterProvider(), nil)
	if err != nil {
		b.Fatal(err)
	}
	ev := outcomeEvents[0]
	m.OnRecordDone(ev)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.OnRecordDone(ev)
		}
	})
}
