package main

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpush/kpush"
)

// client is one producer under test, built for one mode.
type client interface {
	// Send produces one record and waits for its acknowledgement (sync
	// mode). Safe for concurrent use.
	Send(ctx context.Context, key, value []byte) error
	// Produce hands one record over without waiting (async mode); the done
	// function given to the constructor runs once with its outcome. Called
	// from one goroutine.
	Produce(key, value []byte)
	// Close flushes and releases the client.
	Close()
}

// clientConfig is what every constructor gets.
type clientConfig struct {
	addrs []string
	async bool
	idem  bool        // the idempotence setting of this variant
	keyed bool        // records carry keys
	done  func(error) // async mode: called once per record
	// variant is the peer's name, for constructors serving several.
	variant string
	// reqs counts the produce requests the client writes, for clients
	// whose hooks can see them (kpush, franz-go); nil for the others.
	reqs *reqCounter
}

// reqCounter counts produce requests written and their bytes. Written to
// from the clients' writing goroutines, read by the workload after the
// measured records all have their outcome.
type reqCounter struct {
	n, bytes atomic.Int64
}

// add counts one request of b bytes.
func (c *reqCounter) add(b int) {
	c.n.Add(1)
	c.bytes.Add(int64(b))
}

// reset zeroes the counts, after the warm-up.
func (c *reqCounter) reset() {
	c.n.Store(0)
	c.bytes.Store(0)
}

// kpushReqHook counts kpush's written produce requests. kpush reports the
// record batches' bytes (no request framing).
type kpushReqHook struct{ c *reqCounter }

func (h kpushReqHook) OnRequestWritten(ev kpush.RequestWrittenEvent) {
	if ev.Err == nil {
		h.c.add(ev.Bytes)
	}
}

// franzReqHook counts franz-go's written produce requests (key 0). kgo
// reports the bytes written to the connection, framing included, so its
// B/req is a few dozen bytes higher than kpush's for the same batches.
type franzReqHook struct{ c *reqCounter }

func (h franzReqHook) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, n int, _, _ time.Duration, err error) {
	if key == 0 && err == nil {
		h.c.add(n)
	}
}

// peer describes one client variant: its name in the tables, how it is
// built and its settings, as the doc prints them.
type peer struct {
	name     string
	idem     bool
	settings string // non-default settings and notable defaults, for the doc
	build    func(clientConfig) (client, error)
}

// maxBuffered is the record limit of franz-go/buf1M, a secondary
// comparison with a large buffer (kpush's default record limit until
// issue 15 lowered it to 32,768).
const maxBuffered = 1 << 20

// peers lists every variant, base variants first: each client at its own
// defaults, changing only what the workload needs (acks=all where a
// client's default is weaker, delivery reports on, compression off).
// settings lists every change from the client's defaults.
var peers = []peer{
	{"kpush", true, "defaults: `New(WithBrokers(...))` (acks=all, idempotent, linger 0, no compression, " +
		"64 MiB / 32,768-record buffer)", newKpush},
	{"franz-go", true, "`NewClient(SeedBrokers(...), DefaultProduceTopic(...))` plus " +
		"`ProducerBatchCompression(NoCompression())` (default: snappy); acks=all and idempotence are defaults; " +
		"buffer 50,000 records (default `MaxBufferedRecords`); linger 10 ms (default; ProduceSync skips it, async Produce lingers)", newFranz},
	{"sarama", false, "`RequiredAcks=WaitForAll` (default: leader only), `Return.Successes=true` (delivery reports; " +
		"needed by SyncProducer); sync: SyncProducer, async: AsyncProducer; hash partitioner (default)", newSarama},
	{"kafka-go", false, "`RequiredAcks=RequireAll` (default: none), `BatchTimeout=1ms` (default 1 s holds a lone " +
		"sender for a second per record, so C=1 would not finish; the one change beyond the workload's needs); " +
		"keyed: `Murmur2Balancer` (default RoundRobin ignores keys); no idempotence support", newKafkaGo},
	{"confluent", false, "`acks=all` (librdkafka 2.x default too, set for clarity), `compression.type=none`; " +
		"librdkafka defaults otherwise: `linger.ms=5`, `queue.buffering.max.messages=100000`; " +
		"sync: one delivery channel per Send (pooled)", newConfluent},
	{"kpush/idem-off", false, "as kpush, `WithIdempotence(false)`", newKpush},
	{"franz-go/idem-off", false, "as franz-go, `DisableIdempotentWrite()`", newFranz},
	{"sarama/idem-on", true, "as sarama, `Producer.Idempotent=true`, `Net.MaxOpenRequests=1` (required)", newSarama},
	{"confluent/idem-on", true, "as confluent, `enable.idempotence=true`", newConfluent},
	{"franz-go/buf1M", true, "large buffer: as franz-go, `MaxBufferedRecords(1<<20)` (kpush's default record limit before issue 15)", newFranz},
	{"confluent/linger0", false, "no linger: as confluent, `linger.ms=0`, `queue.buffering.max.messages=1048576`", newConfluent},
}

// experiments are kpush variants for studying its send policy (issue 15):
// run only when -clients names them, never in -quick, -full or -headline.
var experiments = []peer{
	{"kpush/inflight1", true, "experiment: as kpush, `WithMaxInflight(1)` (one request in flight per broker)", newKpush},
	{"kpush/linger2ms", true, "experiment: as kpush, `WithLinger(2*time.Millisecond)`", newKpush},
	{"kpush/coalesce0", true, "experiment: as kpush, `WithCoalesceBytes(0)` (no waiting behind an in-flight request: the policy before issue 15)", newKpush},
	{"kpush/coalesce64k", true, "experiment: as kpush, `WithCoalesceBytes(64<<10)`", newKpush},
	{"kpush/coalesce256k", true, "experiment: as kpush, `WithCoalesceBytes(256<<10)`", newKpush},
	{"kpush/coalesce1m", true, "experiment: as kpush, `WithCoalesceBytes(1<<20)`", newKpush},
	{"kpush/buf128k", true, "experiment: as kpush, `WithMaxBufferedRecords(1<<17)`", newKpush},
	{"kpush/inflight2", true, "experiment: as kpush, `WithMaxInflight(2)`", newKpush},
}

// basePeers is how many of peers are the five clients at their defaults.
const basePeers = 5

// findPeer looks a client variant up by name.
func findPeer(name string) (peer, error) {
	all := slices.Concat(peers, experiments)
	i := slices.IndexFunc(all, func(p peer) bool { return p.name == name })
	if i < 0 {
		return peer{}, fmt.Errorf("unknown client %q", name)
	}
	return all[i], nil
}

// kpushClient adapts kpush.
type kpushClient struct {
	p  *kpush.Producer
	cb func(kpush.Result, error)
}

// newKpush builds kpush at its defaults but for the variant's idempotence
// (and, for the experiments, their one setting).
func newKpush(cfg clientConfig) (client, error) {
	opts := []kpush.Option{kpush.WithBrokers(cfg.addrs...), kpush.WithIdempotence(cfg.idem)}
	switch cfg.variant {
	case "kpush/inflight1":
		opts = append(opts, kpush.WithMaxInflight(1))
	case "kpush/linger2ms":
		opts = append(opts, kpush.WithLinger(2*time.Millisecond))
	case "kpush/coalesce0":
		opts = append(opts, kpush.WithCoalesceBytes(0))
	case "kpush/coalesce64k":
		opts = append(opts, kpush.WithCoalesceBytes(64<<10))
	case "kpush/coalesce256k":
		opts = append(opts, kpush.WithCoalesceBytes(256<<10))
	case "kpush/coalesce1m":
		opts = append(opts, kpush.WithCoalesceBytes(1<<20))
	case "kpush/buf128k":
		opts = append(opts, kpush.WithMaxBufferedRecords(1<<17))
	case "kpush/inflight2":
		opts = append(opts, kpush.WithMaxInflight(2))
	}
	if cfg.reqs != nil {
		opts = append(opts, kpush.WithHooks(kpushReqHook{cfg.reqs}))
	}
	p, err := kpush.New(opts...)
	if err != nil {
		return nil, err
	}
	c := &kpushClient{p: p}
	if cfg.done != nil {
		c.cb = func(_ kpush.Result, err error) { cfg.done(err) }
	}
	return c, nil
}

func (c *kpushClient) Send(ctx context.Context, key, value []byte) error {
	_, err := c.p.Send(ctx, &kpush.Record{Topic: benchTopic, Key: key, Value: value})
	return err
}

func (c *kpushClient) Produce(key, value []byte) {
	c.p.SendAsync(context.Background(), &kpush.Record{Topic: benchTopic, Key: key, Value: value}, c.cb)
}

func (c *kpushClient) Close() { c.p.Close(context.Background()) }

// franzClient adapts franz-go's kgo.
type franzClient struct {
	cl      *kgo.Client
	promise func(*kgo.Record, error)
}

// newFranz builds franz-go at its defaults with compression off (and, for
// the variants, idempotence off or kpush's buffer limit).
func newFranz(cfg clientConfig) (client, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(cfg.addrs...), kgo.DefaultProduceTopic(benchTopic),
		kgo.ProducerBatchCompression(kgo.NoCompression())}
	if !cfg.idem {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	if cfg.variant == "franz-go/buf1M" {
		opts = append(opts, kgo.MaxBufferedRecords(maxBuffered))
	}
	if cfg.reqs != nil {
		opts = append(opts, kgo.WithHooks(franzReqHook{cfg.reqs}))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	c := &franzClient{cl: cl}
	if cfg.done != nil {
		c.promise = func(_ *kgo.Record, err error) { cfg.done(err) }
	}
	return c, nil
}

func (c *franzClient) Send(ctx context.Context, key, value []byte) error {
	return c.cl.ProduceSync(ctx, &kgo.Record{Topic: benchTopic, Key: key, Value: value}).FirstErr()
}

func (c *franzClient) Produce(key, value []byte) {
	c.cl.Produce(context.Background(), &kgo.Record{Topic: benchTopic, Key: key, Value: value}, c.promise)
}

func (c *franzClient) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.cl.Flush(ctx)
	c.cl.Close()
}
