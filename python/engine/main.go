// Command engine is kpush's C ABI for the Python package, built with
// -buildmode=c-shared into kpush/_engine.so. Python loads it with cffi
// (ABI mode) at the first producer and never unloads it; one Go runtime
// serves the whole process. Go never calls into Python: outcomes go into a
// per-producer completion queue and a pipe is written when that queue
// goes from empty to non-empty (queue.go).
package main

// Goroutines and ownership (exports): every kp_* function runs on the
// calling Python thread with the GIL released (cffi releases it for every
// call). handles maps the int64 handles given to Python to bridges;
// hmu guards it and nextHandle.

/*
#include <stdint.h>
typedef struct {
	uint64_t id;
	int64_t offset;
	int64_t timestamp_ms;
	int32_t partition;
	int32_t kind;
	int32_t cause;
	int32_t code;
	int64_t msg_off;
	int64_t msg_len;
} kp_completion;
typedef struct {
	uint64_t id;
	char *topic;
	int64_t topic_len;
	char *key;
	int64_t key_len;
	char *val;
	int64_t val_len;
	char *hdrs;
	int64_t hdr_len;
	int64_t nhdr;
	int64_t partition;
	int64_t ts_ms;
	int64_t mode;
} kp_rec;
*/
import "C"

import (
	"context"
	"encoding/json"
	"sync"
	"time"
	"unsafe"

	"github.com/kpush/kpush"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var (
	hmu        sync.RWMutex
	handles    = map[int64]*bridge{}
	nextHandle int64
)

func lookup(h C.int64_t) *bridge {
	hmu.RLock()
	b := handles[int64(h)]
	hmu.RUnlock()
	return b
}

// writeErr copies msg into a C buffer (truncated, NUL-terminated) and
// returns the cause code.
func writeErr(err error, buf *C.char, cap C.int64_t) C.int32_t {
	cause, _ := classify(err)
	if cause == causeNone {
		cause = causeOther
	}
	if buf != nil && cap > 0 {
		dst := unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(cap))
		n := copy(dst[:len(dst)-1], err.Error())
		dst[n] = 0
	}
	return C.int32_t(cause)
}

func goBytes(p *C.char, n C.int64_t) []byte {
	if n < 0 {
		return nil
	}
	if n == 0 {
		return []byte{}
	}
	return C.GoBytes(unsafe.Pointer(p), C.int(n))
}

// kp_new creates a producer from JSON settings. It returns a handle > 0,
// or 0 with the error in errbuf and its cause code in *cause.
//
//export kp_new
func kp_new(cfg *C.char, cfgLen C.int64_t, cause *C.int32_t, errbuf *C.char, errcap C.int64_t) C.int64_t {
	b, err := newBridge(goBytes(cfg, cfgLen))
	if err != nil {
		*cause = writeErr(err, errbuf, errcap)
		return 0
	}
	hmu.Lock()
	nextHandle++
	h := nextHandle
	handles[h] = b
	hmu.Unlock()
	return C.int64_t(h)
}

// kp_fd returns the read end of the producer's wake-up pipe.
//
//export kp_fd
func kp_fd(h C.int64_t) C.int32_t {
	b := lookup(h)
	if b == nil {
		return -1
	}
	return C.int32_t(b.q.rfd)
}

// topicString returns the topic as a Go string, reusing last when the
// bytes are the same (records of one batch usually share a topic).
func topicString(topic *C.char, topicLen C.int64_t, last string) string {
	if int(topicLen) == len(last) && topicLen > 0 && string(unsafe.Slice((*byte)(unsafe.Pointer(topic)), int(topicLen))) == last {
		return last
	}
	return C.GoStringN(topic, C.int(topicLen))
}

func buildItem(id C.uint64_t, topic *C.char, topicLen C.int64_t, key *C.char, keyLen C.int64_t,
	val *C.char, valLen C.int64_t, hdrs *C.char, hdrLen C.int64_t, nhdr C.int32_t, tsMS C.int64_t, last string) (*item, error) {
	it := &item{id: uint64(id)}
	it.rec.Topic = topicString(topic, topicLen, last)
	it.rec.Key = goBytes(key, keyLen)
	it.rec.Value = goBytes(val, valLen)
	if nhdr > 0 {
		hs, err := parseHeaders(goBytes(hdrs, hdrLen), int(nhdr))
		if err != nil {
			return nil, err
		}
		it.rec.Headers = hs
	}
	if tsMS >= 0 {
		it.rec.Timestamp = time.UnixMilli(int64(tsMS))
	}
	return it, nil
}

// kp_send_many starts n records in one call (what one event-loop
// iteration produced), in order. Every kp_rec field is 8 bytes wide, so
// Python packs the records into an array of int64 without cffi structs; outcomes arrive through kp_drain with the
// records' ids. mode is modeSend or modeOrdered; partition < 0 lets the
// partitioner choose; ts_ms < 0 means now. It returns 0, or causeClosed
// (then none was started). A record whose headers are malformed fails
// through its completion.
//
//export kp_send_many
func kp_send_many(h C.int64_t, recs *C.kp_rec, n C.int64_t) C.int32_t {
	b := lookup(h)
	if b == nil || b.closed.Load() {
		return causeClosed
	}
	var t0 int64
	if stageOn {
		t0 = monoNow()
	}
	its := make([]*item, 0, int(n))
	var lastTopic string
	for _, r := range unsafe.Slice(recs, int(n)) {
		it, err := buildItem(r.id, r.topic, r.topic_len, r.key, r.key_len, r.val, r.val_len, r.hdrs, r.hdr_len, C.int32_t(r.nhdr), r.ts_ms, lastTopic)
		if err != nil {
			// Failed at hand-over, counted with the batch: pushed now, its
			// outcome could trail a close that has already finished.
			it = &item{id: uint64(r.id), err: &kpush.ProduceError{Partition: -1, Err: kpush.ErrInvalidHeader}}
		}
		lastTopic = it.rec.Topic
		it.mode = int32(r.mode)
		it.rec.Partition = int32(r.partition)
		its = append(its, it)
	}
	if stageOn {
		stageItems(its, stSendManyIn, t0)
	}
	if !b.sendMany(its) {
		return causeClosed
	}
	if stageOn {
		stageItems(its, stSendManyOut, monoNow())
	}
	return 0
}

// kp_send_sync sends one record and waits for its outcome on the calling
// thread (the blocking Producer); the outcome is written to *out, its
// message to msgbuf.
//
//export kp_send_sync
func kp_send_sync(h C.int64_t, topic *C.char, topicLen C.int64_t,
	key *C.char, keyLen C.int64_t, val *C.char, valLen C.int64_t,
	hdrs *C.char, hdrLen C.int64_t, nhdr C.int32_t, partition C.int32_t, tsMS C.int64_t,
	out *C.kp_completion, msgbuf *C.char, msgcap C.int64_t) C.int32_t {
	b := lookup(h)
	if b == nil || b.closed.Load() {
		return causeClosed
	}
	it, err := buildItem(0, topic, topicLen, key, keyLen, val, valLen, hdrs, hdrLen, nhdr, tsMS, "")
	if err != nil {
		return causeInvalidHeader
	}
	p, err := b.producerFor(int32(partition))
	var res kpush.Result
	if err == nil {
		it.rec.Partition = int32(partition)
		b.outstanding.Add(1)
		g := b.undelivered.Add()
		res, err = p.Send(context.Background(), &it.rec)
		g.Done()
		b.outstanding.Add(-1)
	}
	c := outcome(0, res, err)
	fill(out, &c, 0, msgbuf, msgcap)
	return 0
}

func fill(o *C.kp_completion, c *completion, off int, msgbuf *C.char, msgcap C.int64_t) int {
	o.id = C.uint64_t(c.id)
	o.offset = C.int64_t(c.offset)
	o.timestamp_ms = C.int64_t(c.timestamp)
	o.partition = C.int32_t(c.partition)
	o.kind = C.int32_t(c.kind)
	o.cause = C.int32_t(c.cause)
	o.code = C.int32_t(c.code)
	n := 0
	if len(c.msg) > 0 && msgcap > 0 {
		dst := unsafe.Slice((*byte)(unsafe.Pointer(msgbuf)), int(msgcap))
		n = copy(dst[off:], c.msg)
	}
	o.msg_off = C.int64_t(off)
	o.msg_len = C.int64_t(n)
	return n
}

// kp_cancel withdraws the record id if it is not yet sent, or drops its
// outcome if it is in flight (see kpush.Producer.Send's ctx).
//
//export kp_cancel
func kp_cancel(h C.int64_t, id C.uint64_t) {
	if b := lookup(h); b != nil {
		b.cancelRecord(uint64(id))
	}
}

// kp_drain moves up to max completions into out (messages into msgbuf)
// and returns how many it moved. Read the pipe before calling it.
//
//export kp_drain
func kp_drain(h C.int64_t, out *C.kp_completion, max C.int64_t, msgbuf *C.char, msgcap C.int64_t) C.int64_t {
	b := lookup(h)
	if b == nil || max <= 0 {
		return 0
	}
	var t0 int64
	if stageOn {
		t0 = monoNow()
	}
	outs := unsafe.Slice(out, int(max))
	off := 0
	ids := make([]uint64, 0, 64)
	n := b.q.take(int(max), int(msgcap), func(i int, c *completion) {
		off += fill(&outs[i], c, off, msgbuf, msgcap)
		if c.kind <= kindUnknown {
			ids = append(ids, c.id)
		}
		if stageOn && c.kind > kindUnknown {
			stamp(c.id, stDrainIn, t0)
		}
	})
	if len(ids) > 0 {
		b.forget(ids)
	}
	if stageOn {
		t1 := monoNow()
		for _, id := range ids {
			stamp(id, stDrainIn, t0)
			stamp(id, stDrainOut, t1)
		}
	}
	return C.int64_t(n)
}

// kp_flush_async starts a flush; its completion (kind flush, the given id)
// arrives through kp_drain.
//
//export kp_flush_async
func kp_flush_async(h C.int64_t, id C.uint64_t, timeoutMS C.int64_t) {
	b := lookup(h)
	if b == nil {
		return
	}
	b.flushAsync(uint64(id), int64(timeoutMS))
}

// kp_close_async starts closing; its completion (kind close) arrives
// after every record's outcome.
//
//export kp_close_async
func kp_close_async(h C.int64_t, id C.uint64_t, timeoutMS C.int64_t) {
	b := lookup(h)
	if b == nil {
		return
	}
	b.closeAsync(uint64(id), int64(timeoutMS))
}

func done(id uint64, kind int32, err error) completion {
	c := completion{id: id, kind: kind}
	if err != nil {
		c.cause, c.code = classify(err)
		c.msg = err.Error()
	}
	return c
}

// kp_flush flushes on the calling thread; 0 or a cause code.
//
//export kp_flush
func kp_flush(h C.int64_t, timeoutMS C.int64_t, errbuf *C.char, errcap C.int64_t) C.int32_t {
	b := lookup(h)
	if b == nil {
		return causeClosed
	}
	barrier, err := b.seal()
	if err := b.flush(barrier, err, int64(timeoutMS)); err != nil {
		return writeErr(err, errbuf, errcap)
	}
	return 0
}

// kp_close closes on the calling thread; 0 or a cause code.
//
//export kp_close
func kp_close(h C.int64_t, timeoutMS C.int64_t, errbuf *C.char, errcap C.int64_t) C.int32_t {
	b := lookup(h)
	if b == nil {
		return causeClosed
	}
	if err := b.close(int64(timeoutMS)); err != nil {
		return writeErr(err, errbuf, errcap)
	}
	return 0
}

// kp_free forgets a closed producer and closes its pipe. Python calls it
// once, after the close completion, having removed its reader.
//
//export kp_free
func kp_free(h C.int64_t) {
	hmu.Lock()
	b := handles[int64(h)]
	delete(handles, int64(h))
	hmu.Unlock()
	if b != nil {
		b.q.close()
	}
}

// kp_stats writes the producer's Stats as JSON into buf and returns its
// length (call again with a larger buffer if it is larger than cap).
//
//export kp_stats
func kp_stats(h C.int64_t, buf *C.char, cap C.int64_t) C.int64_t {
	b := lookup(h)
	if b == nil {
		return 0
	}
	s := b.p.Stats()
	b.mmu.Lock()
	m := b.manual
	b.mmu.Unlock()
	if m != nil {
		ms := m.Stats()
		s.RecordsSent += ms.RecordsSent
		s.RecordsFailed += ms.RecordsFailed
		s.RecordsBuffered += ms.RecordsBuffered
		s.BytesBuffered += ms.BytesBuffered
		s.Batches += ms.Batches
		s.BatchedRecords += ms.BatchedRecords
		s.Requests += ms.Requests
		s.InflightRequests += ms.InflightRequests
		s.Retries += ms.Retries
		s.Throttles += ms.Throttles
		s.AuthFailures += ms.AuthFailures
		s.Reauthentications += ms.Reauthentications
		if s.Batches > 0 {
			s.AvgBatchRecords = float64(s.BatchedRecords) / float64(s.Batches)
		}
	}
	raw, _ := json.Marshal(s)
	if int64(len(raw)) <= int64(cap) {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(cap)), raw)
	}
	return C.int64_t(len(raw))
}

// kp_token answers the OAUTHBEARER token request id (a completion of
// kind token): the token, or an error message when errLen > 0.
//
//export kp_token
func kp_token(h C.int64_t, id C.uint64_t, tok *C.char, tokLen C.int64_t, errMsg *C.char, errLen C.int64_t) {
	if b := lookup(h); b != nil {
		b.provideToken(uint64(id), C.GoStringN(tok, C.int(tokLen)), C.GoStringN(errMsg, C.int(errLen)))
	}
}

// kp_partitions_async looks up a topic's partition count with one
// Metadata request (kpush's public API does not expose it); the
// completion (kind partitions) carries the count in offset.
//
//export kp_partitions_async
func kp_partitions_async(h C.int64_t, id C.uint64_t, topic *C.char, topicLen C.int64_t, timeoutMS C.int64_t) {
	b := lookup(h)
	if b == nil {
		return
	}
	name := C.GoStringN(topic, C.int(topicLen))
	go func() {
		n, err := b.partitions(name, int64(timeoutMS))
		c := done(uint64(id), kindPartitions, err)
		c.offset = int64(n)
		b.q.push(c)
	}()
}

// kp_partitions is kp_partitions_async on the calling thread (the blocking
// producer's partitions_for): the topic's partition count, or minus the
// cause code with the Kafka error code in *code and the message in errbuf.
//
//export kp_partitions
func kp_partitions(h C.int64_t, topic *C.char, topicLen C.int64_t, timeoutMS C.int64_t, code *C.int32_t, errbuf *C.char, errcap C.int64_t) C.int64_t {
	b := lookup(h)
	if b == nil {
		return -causeClosed
	}
	n, err := b.partitions(C.GoStringN(topic, C.int(topicLen)), int64(timeoutMS))
	if err != nil {
		_, kc := classify(err)
		*code = C.int32_t(kc)
		return -C.int64_t(writeErr(err, errbuf, errcap))
	}
	return C.int64_t(n)
}

func (b *bridge) partitions(topic string, timeoutMS int64) (int, error) {
	_, _, tcfg, mech, err := parseConfig(mustJSON(b.cfg), b.token)
	if err != nil {
		return 0, err
	}
	opts := []kgo.Opt{kgo.SeedBrokers(b.cfg.Brokers...)}
	if tcfg != nil {
		opts = append(opts, kgo.DialTLSConfig(tcfg))
	}
	if mech != nil {
		opts = append(opts, kgo.SASL(mech))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ctx, cancel := timeoutCtx(timeoutMS)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	t := kmsg.NewMetadataRequestTopic()
	t.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, err
	}
	if len(resp.Topics) != 1 {
		return 0, kpush.ErrUnknownTopic
	}
	if err := kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil {
		if err == kerr.UnknownTopicOrPartition {
			return 0, kpush.ErrUnknownTopic
		}
		return 0, err
	}
	return len(resp.Topics[0].Partitions), nil
}

func mustJSON(v any) []byte {
	raw, _ := json.Marshal(v)
	return raw
}

func main() {}
