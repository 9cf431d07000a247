package kotel

import (
	"context"

	"go.opentelemetry.io/otel/propagation"

	"github.com/kpush/kpush"
)

// HeaderCarrier adapts a record's headers to propagation.TextMapCarrier.
// Get and Keys read the headers in place. The first Set replaces the slice
// that *Headers points to with a copy (so a backing array shared with other
// records is never written to), then replaces the value of an existing
// header with that key or appends one. Not safe for concurrent use.
type HeaderCarrier struct {
	headers *[]kpush.Header
	owned   bool // *headers is our copy
}

var _ propagation.TextMapCarrier = (*HeaderCarrier)(nil)

// NewHeaderCarrier returns a carrier over *headers, e.g. &rec.Headers.
func NewHeaderCarrier(headers *[]kpush.Header) *HeaderCarrier {
	return &HeaderCarrier{headers: headers}
}

// Get returns the value of the first header with key, or "".
func (c *HeaderCarrier) Get(key string) string {
	for _, h := range *c.headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Set sets the header key to value (see HeaderCarrier for how).
func (c *HeaderCarrier) Set(key, value string) {
	if !c.owned {
		old := *c.headers
		// Room for traceparent and tracestate without a second copy.
		*c.headers = append(make([]kpush.Header, 0, len(old)+2), old...)
		c.owned = true
	}
	h := *c.headers
	for i := range h {
		if h[i].Key == key {
			h[i].Value = []byte(value)
			return
		}
	}
	*c.headers = append(h, kpush.Header{Key: key, Value: []byte(value)})
}

// Keys returns the header keys in order (duplicates included).
func (c *HeaderCarrier) Keys() []string {
	keys := make([]string, len(*c.headers))
	for i, h := range *c.headers {
		keys[i] = h.Key
	}
	return keys
}

// Extract returns ctx carrying the remote span context that p finds in
// headers (for example the W3C "traceparent" header written by a Tracer
// with WithInjectTraceContext). A consumer starts its span from the
// returned context to continue the producer's trace. Headers of other
// clients convert directly: franz-go's kgo.RecordHeader has the same
// fields as kpush.Header. headers is only read.
func Extract(ctx context.Context, p propagation.TextMapPropagator, headers []kpush.Header) context.Context {
	return p.Extract(ctx, NewHeaderCarrier(&headers))
}
