package kotel

// Goroutines and ownership: the callback registered by observe runs on
// whatever goroutine collects the metrics (the SDK's reader); it only
// calls kpush.Producer.Stats, which is safe from any goroutine.

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/kpush/kpush"
)

// observe registers gauges read from p.Stats at each collection.
func (m *meter) observe(p *kpush.Producer, attrs []attribute.KeyValue) (metric.Registration, error) {
	bytes, err := m.meter.Int64ObservableGauge(MetricBufferedBytes,
		metric.WithUnit("By"),
		metric.WithDescription("Bytes of the records buffered or in flight (counted against WithMaxBufferedBytes)."))
	if err != nil {
		return nil, err
	}
	recs, err := m.meter.Int64ObservableGauge(MetricBufferedMessages,
		metric.WithUnit("{message}"),
		metric.WithDescription("Records buffered or in flight, awaiting an outcome."))
	if err != nil {
		return nil, err
	}
	inflight, err := m.meter.Int64ObservableGauge(MetricInflightRequests,
		metric.WithUnit("{request}"),
		metric.WithDescription("Produce requests written and awaiting a response."))
	if err != nil {
		return nil, err
	}
	all := append(append([]attribute.KeyValue{attrSystem}, m.attrs...), attrs...)
	opt := metric.WithAttributeSet(attribute.NewSet(all...))
	return m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := p.Stats()
		o.ObserveInt64(bytes, s.BytesBuffered, opt)
		o.ObserveInt64(recs, s.RecordsBuffered, opt)
		o.ObserveInt64(inflight, s.InflightRequests, opt)
		return nil
	}, bytes, recs, inflight)
}
