package wire

import (
	"bufio"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestConn_DoneWaitsForWritevToEnd: a produce request is written with
// writev straight from the batches' memory, which is the caller's again
// once its done runs (the sink retries, renumbers or recycles the batch).
// When the connection is closed by another goroutine while the request
// is being written (the peer reads nothing, so the write blocks), the
// reader must not run done before the write has ended.
func TestConn_DoneWaitsForWritevToEnd(t *testing.T) {
	for i := range 20 {
		if early := doneBeforeWriteEnds(t); early {
			t.Fatalf("round %d: done ran while the request was still being written from the batches (or a write followed it)", i)
		}
	}
}

// doneBeforeWriteEnds writes one 8 MiB produce request to a peer that
// does not read, closes the connection from another goroutine meanwhile
// and reports whether done ran while a write of the request was in
// progress, or a write started after done.
func doneBeforeWriteEnds(t *testing.T) bool {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); peer <- c }()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p := <-peer
	defer p.Close()
	wc := &watchedConn{Conn: nc}
	c := &Conn{nc: wc, cfg: &Config{RequestTimeout: 30 * time.Second}, readerDone: make(chan struct{}),
		rwake: make(chan struct{}, 1), br: bufio.NewReader(nc), fmtr: kmsg.NewRequestFormatter(), writev: true}
	for i := range c.versions {
		c.versions[i] = -1
	}
	c.versions[kmsg.Produce] = 9
	go c.readLoop()

	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 1000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = "t"
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = make([]byte, 8<<20) // more than the socket buffers hold
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)

	go func() { time.Sleep(20 * time.Millisecond); c.Close() }()
	doneCh := make(chan struct{})
	c.Do(req, false, func(kmsg.Response, error) {
		if wc.writing.Load() > 0 {
			wc.early.Store(true)
		}
		wc.done.Store(true)
		close(doneCh)
	})
	select {
	case <-doneCh:
	case <-time.After(10 * time.Second):
		t.Fatal("done never ran after Close")
	}
	return wc.early.Load()
}

// watchedConn tells whether a Write is in progress (net.Buffers.WriteTo
// writes each piece with Write on a conn without writev).
type watchedConn struct {
	net.Conn
	writing     atomic.Int32
	done, early atomic.Bool
}

func (w *watchedConn) Write(b []byte) (int, error) {
	w.writing.Add(1)
	defer w.writing.Add(-1)
	if w.done.Load() {
		w.early.Store(true) // written after done: from memory that is the caller's again
	}
	return w.Conn.Write(b)
}
