package realfaults

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/internal/faultproxy"
)

// wireTap records the Produce requests and responses the fault proxies
// forward, per broker, with the time the proxy saw each: what a client
// actually sent, independent of what the client says it did.
type wireTap struct {
	mu    sync.Mutex
	conns map[connKey]*tapConn
	reqs  []wireReq
	resps []wireResp
	bad   []string // frames that did not decode
}

type connKey struct {
	node int
	conn uint64
}

// tapConn is the state of one proxied connection: its client.id and the
// versions of its outstanding Produce requests, by correlation ID.
type tapConn struct {
	clientID string
	pending  map[int32]int16
}

// wireReq is one Produce request, seen when its last byte reached the proxy.
type wireReq struct {
	node     int
	clientID string
	at       time.Time
	bytes    int
	records  int
}

// wireResp is one Produce response, seen before the client could read it.
type wireResp struct {
	node     int
	clientID string
	at       time.Time
	throttle time.Duration
}

// attach installs the tap on every proxy of f, for connections opened from
// now on; the returned function removes it.
func (w *wireTap) attach(f *faultCluster) func() {
	w.conns = map[connKey]*tapConn{}
	for i, p := range f.proxies {
		p.SetTap(func(fr faultproxy.Frame) { w.frame(i, fr) })
	}
	return func() {
		for _, p := range f.proxies {
			p.SetTap(nil)
		}
	}
}

// undecoded lists the Produce responses the tap could not decode.
func (w *wireTap) undecoded() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.bad)
}

// reset forgets the requests and responses recorded so far.
func (w *wireTap) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reqs, w.resps = nil, nil
}

func (w *wireTap) frame(node int, fr faultproxy.Frame) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ck := connKey{node, fr.Conn}
	c := w.conns[ck]
	if c == nil {
		c = &tapConn{pending: map[int32]int16{}}
		w.conns[ck] = c
	}
	d := fr.Data
	if fr.Dir == faultproxy.ToTarget {
		// Request header v1/v2: api key, version, correlation ID, client ID.
		if len(d) < 10 {
			return
		}
		key, ver := int16(binary.BigEndian.Uint16(d)), int16(binary.BigEndian.Uint16(d[2:]))
		corr := int32(binary.BigEndian.Uint32(d[4:]))
		if n := int(int16(binary.BigEndian.Uint16(d[8:]))); n > 0 && len(d) >= 10+n {
			c.clientID = string(d[10 : 10+n])
		}
		if key != 0 {
			return
		}
		c.pending[corr] = ver
		w.reqs = append(w.reqs, wireReq{node: node, clientID: c.clientID, at: fr.At, bytes: len(d), records: countRecords(d, ver)})
		return
	}
	if len(d) < 4 {
		return
	}
	corr := int32(binary.BigEndian.Uint32(d))
	ver, ok := c.pending[corr]
	if !ok {
		return // not a Produce response
	}
	delete(c.pending, corr)
	resp := kmsg.NewPtrProduceResponse()
	resp.SetVersion(ver)
	body, err := skipResponseTags(d[4:], resp.IsFlexible())
	if err == nil {
		err = resp.ReadFrom(body)
	}
	if err != nil {
		w.bad = append(w.bad, fmt.Sprintf("broker %d: produce response v%d: %v", node, ver, err))
		return
	}
	w.resps = append(w.resps, wireResp{node: node, clientID: c.clientID, at: fr.At, throttle: time.Duration(resp.ThrottleMillis) * time.Millisecond})
}

// skipResponseTags skips the tagged fields of a flexible response header.
func skipResponseTags(b []byte, flexible bool) ([]byte, error) {
	if !flexible {
		return b, nil
	}
	n, w := binary.Uvarint(b)
	if w <= 0 {
		return nil, fmt.Errorf("bad header tag count")
	}
	b = b[w:]
	for range n {
		if _, w = binary.Uvarint(b); w <= 0 {
			return nil, fmt.Errorf("bad header tag")
		}
		b = b[w:]
		size, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < size {
			return nil, fmt.Errorf("bad header tag size")
		}
		b = b[w+int(size):]
	}
	return b, nil
}

// countRecords sums the record counts of a Produce request's batches (0 if
// it does not decode).
func countRecords(d []byte, ver int16) int {
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(ver)
	// Skip the request header: 8 bytes, the client ID, and tags if flexible.
	n := int(int16(binary.BigEndian.Uint16(d[8:])))
	body := d[10+max(n, 0):]
	body, err := skipResponseTags(body, req.IsFlexible())
	if err != nil || req.ReadFrom(body) != nil {
		return 0
	}
	total := 0
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			for b := p.Records; len(b) >= 61; {
				size := int(binary.BigEndian.Uint32(b[8:])) + 12
				total += int(binary.BigEndian.Uint32(b[57:]))
				if size > len(b) {
					break
				}
				b = b[size:]
			}
		}
	}
	return total
}

// clientSummary is what one client.id did on the wire.
type clientSummary struct {
	requests, throttled, records, bytes int
	throttledFor                        time.Duration
}

func (s clientSummary) String() string {
	if s.requests == 0 {
		return "no produce requests"
	}
	return fmt.Sprintf("%d produce requests (%.1f records, %d B each), %d throttled responses (%v in all)",
		s.requests, float64(s.records)/float64(s.requests), s.bytes/s.requests, s.throttled, s.throttledFor.Round(time.Millisecond))
}

func (w *wireTap) summary(clientID string) clientSummary {
	w.mu.Lock()
	defer w.mu.Unlock()
	var s clientSummary
	for _, r := range w.reqs {
		if r.clientID == clientID {
			s.requests++
			s.records += r.records
			s.bytes += r.bytes
		}
	}
	for _, r := range w.resps {
		if r.clientID == clientID && r.throttle > 0 {
			s.throttled++
			s.throttledFor += r.throttle
		}
	}
	return s
}

// throttleViolations checks KIP-219 for clientID: after a Produce response
// with throttle_time_ms > 0, the client sends no Produce request to that
// broker until the throttle has passed. A request the client wrote just
// before it read the response may reach the proxy just after the proxy
// forwarded the response, so requests within grace of the response are
// not counted; throttles shorter than twice grace are not judged. It
// returns the violations and how many throttles were judged.
func (w *wireTap) throttleViolations(clientID string, grace time.Duration) (bad []string, judged int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, resp := range w.resps {
		if resp.clientID != clientID || resp.throttle <= 0 || resp.throttle < 2*grace {
			continue
		}
		judged++
		from, until := resp.at.Add(grace), resp.at.Add(resp.throttle-time.Millisecond)
		for _, req := range w.reqs {
			if req.clientID == clientID && req.node == resp.node && req.at.After(from) && req.at.Before(until) {
				bad = append(bad, fmt.Sprintf("broker %d: produce request %v after a response throttling for %v",
					resp.node, req.at.Sub(resp.at).Round(time.Millisecond), resp.throttle))
			}
		}
	}
	return bad, judged
}
