package kpush_test

import (
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Network faults: a listener wrapper handed to kfake with kfake.ListenFn.

// relNet wraps every broker listener. It parses the request stream of each
// connection (size, key, version, correlation id) so that the response
// stream can be matched to request keys, and lets a hook drop (cut) or
// rewrite responses after the broker has applied the request.
type relNet struct {
	mu  sync.Mutex
	lns map[int]*relListener // by port; the latest listener on that port

	refuse atomic.Bool // accept and immediately close new connections
	// refusePort does the same for one port only (0: none).
	refusePort atomic.Int64
	quiet      atomic.Bool // hooks off (set before reading back)
	// recordProduce makes each connection keep the arrival times of its
	// produce requests (relConn.produceAt).
	recordProduce atomic.Bool
	// requests counts the requests brokers received, by key.
	requests [128]atomic.Int64

	// silent makes the connections on one port half-open: neither side's
	// bytes get through until unsilence (relNet.silence).
	silentMu   sync.Mutex
	silentPort int
	silentEnd  chan struct{}

	// hook sees every response frame (size, corr, [tag], body) with its
	// request's key and version; it returns a replacement frame (nil keeps
	// the original) or cut=true to close the connection instead of
	// answering. Set before the cluster starts; runs on kfake's writer
	// goroutines, concurrently.
	hook func(c *relConn, key, version int16, frame []byte) (out []byte, cut bool)
}

func newRelNet() *relNet { return &relNet{lns: map[int]*relListener{}} }

func (n *relNet) listen(network, addr string) (net.Listener, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	l := &relListener{Listener: ln, net: n, port: ln.Addr().(*net.TCPAddr).Port, conns: map[*relConn]struct{}{}, accepted: make(chan struct{})}
	n.mu.Lock()
	n.lns[l.port] = l
	n.mu.Unlock()
	return l, nil
}

// silence stops all traffic on the connections of port, both ways, as a
// half-open TCP connection would, until unsilence.
func (n *relNet) silence(port int) {
	n.silentMu.Lock()
	defer n.silentMu.Unlock()
	n.silentPort, n.silentEnd = port, make(chan struct{})
}

// unsilence lets the traffic silence stopped through again.
func (n *relNet) unsilence() {
	n.silentMu.Lock()
	defer n.silentMu.Unlock()
	if n.silentEnd != nil {
		close(n.silentEnd)
	}
	n.silentPort, n.silentEnd = 0, nil
}

// waitSpeak blocks while c's port is silenced (or until c is closed).
func (c *relConn) waitSpeak() {
	n := c.l.net
	n.silentMu.Lock()
	port, end := n.silentPort, n.silentEnd
	n.silentMu.Unlock()
	if end == nil || port != c.l.port {
		return
	}
	select {
	case <-end:
	case <-c.closed:
	}
}

// requestCounts returns the requests received so far by key.
func (n *relNet) requestCounts() map[int16]int64 {
	m := map[int16]int64{}
	for key := range n.requests {
		if v := n.requests[key].Load(); v > 0 {
			m[int16(key)] = v
		}
	}
	return m
}

// listener returns the listener on port, or nil.
func (n *relNet) listener(port int) *relListener {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lns[port]
}

// kill closes every connection accepted on port (as a dying broker would).
func (n *relNet) kill(port int) int {
	l := n.listener(port)
	if l == nil {
		return 0
	}
	return l.killAll()
}

// killAll closes every connection on every listener.
func (n *relNet) killAll() int {
	n.mu.Lock()
	lns := make([]*relListener, 0, len(n.lns))
	for _, l := range n.lns {
		lns = append(lns, l)
	}
	n.mu.Unlock()
	k := 0
	for _, l := range lns {
		k += l.killAll()
	}
	return k
}

// pendingConn returns a connection on port with an unanswered request of
// key, or nil.
func (n *relNet) pendingConn(port int, key kmsg.Key) *relConn {
	l := n.listener(port)
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		c.mu.Lock()
		for _, r := range c.reqs {
			if r.key == int16(key) {
				c.mu.Unlock()
				return c
			}
		}
		c.mu.Unlock()
	}
	return nil
}

type relListener struct {
	net.Listener
	net  *relNet
	port int

	mu       sync.Mutex
	conns    map[*relConn]struct{}
	accepted chan struct{} // closed (and replaced) at each accepted connection
}

// nextAccept returns a channel closed when the next connection on port is
// accepted (nil if there is no listener on port).
func (n *relNet) nextAccept(port int) <-chan struct{} {
	l := n.listener(port)
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepted
}

func (l *relListener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.net.refuse.Load() || int64(l.port) == l.net.refusePort.Load() {
			nc.Close()
			continue
		}
		c := &relConn{Conn: nc, l: l, closed: make(chan struct{}), reqs: map[int32]relReqInfo{}}
		l.mu.Lock()
		l.conns[c] = struct{}{}
		close(l.accepted)
		l.accepted = make(chan struct{})
		l.mu.Unlock()
		return c, nil
	}
}

func (l *relListener) killAll() int {
	l.mu.Lock()
	conns := make([]*relConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return len(conns)
}

type relReqInfo struct{ key, version int16 }

// relConn is one broker-side connection.
type relConn struct {
	net.Conn
	l *relListener

	closed    chan struct{} // closed when either side closed the connection
	closeOnce sync.Once

	// Request parser state; only kfake's (sequential) reads touch it.
	hdr  [12]byte
	hdrN int
	skip int

	mu   sync.Mutex
	reqs map[int32]relReqInfo // unanswered requests by correlation id
	// produceAt holds when each produce request's header arrived, in
	// order; kept only when relNet.recordProduce is set.
	produceAt []time.Time
}

// produceWithin counts the produce requests that arrived on c strictly
// after at and before at+d.
func (c *relConn) produceWithin(at time.Time, d time.Duration) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, _ := slices.BinarySearchFunc(c.produceAt, at, func(a, t time.Time) int { return a.Compare(t) })
	n := 0
	for ; i < len(c.produceAt) && c.produceAt[i].Before(at.Add(d)); i++ {
		if c.produceAt[i].After(at) {
			n++
		}
	}
	return n
}

var errRelCut = errors.New("reliability test: connection cut")

func (c *relConn) Read(b []byte) (int, error) {
	c.waitSpeak()
	n, err := c.Conn.Read(b)
	c.parse(b[:n])
	if err != nil {
		c.markClosed()
	}
	return n, err
}

// parse follows request frames: int32 size, int16 key, int16 version,
// int32 correlation id, rest.
func (c *relConn) parse(p []byte) {
	for len(p) > 0 {
		if c.skip > 0 {
			k := min(c.skip, len(p))
			c.skip -= k
			p = p[k:]
			continue
		}
		k := copy(c.hdr[c.hdrN:], p)
		c.hdrN += k
		p = p[k:]
		if c.hdrN < len(c.hdr) {
			continue
		}
		size := int(binary.BigEndian.Uint32(c.hdr[0:4]))
		info := relReqInfo{key: int16(binary.BigEndian.Uint16(c.hdr[4:6])), version: int16(binary.BigEndian.Uint16(c.hdr[6:8]))}
		corr := int32(binary.BigEndian.Uint32(c.hdr[8:12]))
		if info.key >= 0 && int(info.key) < len(c.l.net.requests) {
			c.l.net.requests[info.key].Add(1)
		}
		c.mu.Lock()
		c.reqs[corr] = info
		if info.key == int16(kmsg.Produce) && c.l.net.recordProduce.Load() {
			c.produceAt = append(c.produceAt, time.Now())
		}
		c.mu.Unlock()
		c.hdrN, c.skip = 0, max(0, size-8)
	}
}

func (c *relConn) Write(b []byte) (int, error) {
	c.waitSpeak()
	if len(b) < 8 {
		return c.Conn.Write(b)
	}
	corr := int32(binary.BigEndian.Uint32(b[4:8]))
	c.mu.Lock()
	info, ok := c.reqs[corr]
	delete(c.reqs, corr)
	c.mu.Unlock()
	n := c.l.net
	if !ok || n.hook == nil || n.quiet.Load() {
		return c.Conn.Write(b)
	}
	out, cut := n.hook(c, info.key, info.version, b)
	if cut {
		c.Close()
		return 0, errRelCut
	}
	if out == nil {
		return c.Conn.Write(b)
	}
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (c *relConn) markClosed() {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
}

func (c *relConn) Close() error {
	c.markClosed()
	return c.Conn.Close()
}

// rewriteResponse decodes a response frame, lets fn change it, and encodes
// it again. It returns nil if the frame cannot be decoded.
func rewriteResponse(key, version int16, frame []byte, fn func(kmsg.Response)) []byte {
	resp := kmsg.ResponseForKey(key)
	if resp == nil {
		return nil
	}
	resp.SetVersion(version)
	body := frame[8:]
	tag := resp.IsFlexible() && key != int16(kmsg.ApiVersions)
	if tag {
		if len(body) == 0 {
			return nil
		}
		body = body[1:] // kfake writes an empty tag section
	}
	if err := resp.ReadFrom(body); err != nil {
		return nil
	}
	fn(resp)
	out := make([]byte, 8, len(frame)+16)
	copy(out[4:8], frame[4:8])
	if tag {
		out = append(out, 0)
	}
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out[0:4], uint32(len(out)-4))
	return out
}

// errRelCutBefore makes kfake close the connection without applying the
// request (a control returning an error).
var errRelCutBefore = errors.New("reliability test: cut before apply")

// ---------------------------------------------------------------------------
