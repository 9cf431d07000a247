package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	kafkago "github.com/segmentio/kafka-go"
)

// saramaClient adapts sarama: SyncProducer in sync mode, AsyncProducer in
// async mode.
type saramaClient struct {
	sync    sarama.SyncProducer
	async   sarama.AsyncProducer
	drained sync.WaitGroup // the async result readers
}

// newSarama builds a sarama producer: sync or async, acks=all.
func newSarama(cfg clientConfig) (client, error) {
	sc := sarama.NewConfig()
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Compression = sarama.CompressionNone
	sc.Producer.Return.Successes = true
	if cfg.idem {
		sc.Producer.Idempotent = true
		sc.Net.MaxOpenRequests = 1
	}
	c := &saramaClient{}
	var err error
	if !cfg.async {
		c.sync, err = sarama.NewSyncProducer(cfg.addrs, sc)
		return c, err
	}
	c.async, err = sarama.NewAsyncProducer(cfg.addrs, sc)
	if err != nil {
		return nil, err
	}
	c.drained.Add(2)
	go func() {
		defer c.drained.Done()
		for range c.async.Successes() {
			cfg.done(nil)
		}
	}()
	go func() {
		defer c.drained.Done()
		for e := range c.async.Errors() {
			cfg.done(e.Err)
		}
	}()
	return c, nil
}

// saramaMessage wraps a record; a nil key stays null on the wire.
func saramaMessage(key, value []byte) *sarama.ProducerMessage {
	m := &sarama.ProducerMessage{Topic: benchTopic, Value: sarama.ByteEncoder(value)}
	if key != nil {
		m.Key = sarama.ByteEncoder(key)
	}
	return m
}

func (c *saramaClient) Send(_ context.Context, key, value []byte) error {
	_, _, err := c.sync.SendMessage(saramaMessage(key, value))
	return err
}

func (c *saramaClient) Produce(key, value []byte) { c.async.Input() <- saramaMessage(key, value) }

func (c *saramaClient) Close() {
	if c.sync != nil {
		c.sync.Close()
		return
	}
	c.async.AsyncClose()
	c.drained.Wait()
}

// kafkaGoClient adapts segmentio/kafka-go's Writer (Async in async mode).
type kafkaGoClient struct {
	w    *kafkago.Writer
	done func(error)
}

// newKafkaGo builds a kafka-go Writer with acks=all and a 1 ms batch timeout.
func newKafkaGo(cfg clientConfig) (client, error) {
	if cfg.idem {
		return nil, errors.New("kafka-go has no idempotent producer")
	}
	w := &kafkago.Writer{
		Addr:         kafkago.TCP(cfg.addrs...),
		Topic:        benchTopic,
		RequiredAcks: kafkago.RequireAll,
		BatchTimeout: time.Millisecond,
		Async:        cfg.async,
	}
	if cfg.keyed {
		w.Balancer = &kafkago.Murmur2Balancer{} // the default, round robin, ignores keys
	}
	if cfg.async {
		w.Completion = func(msgs []kafkago.Message, err error) {
			for range msgs {
				cfg.done(err)
			}
		}
	}
	return &kafkaGoClient{w: w, done: cfg.done}, nil
}

func (c *kafkaGoClient) Send(ctx context.Context, key, value []byte) error {
	return c.w.WriteMessages(ctx, kafkago.Message{Key: key, Value: value})
}

func (c *kafkaGoClient) Produce(key, value []byte) {
	if err := c.w.WriteMessages(context.Background(), kafkago.Message{Key: key, Value: value}); err != nil {
		c.done(err) // refused before it was queued: Completion will not run
	}
}

func (c *kafkaGoClient) Close() { c.w.Close() }

// confluentClient adapts confluent-kafka-go (librdkafka through cgo).
type confluentClient struct {
	p       *kafka.Producer
	topic   string
	done    func(error)
	chans   sync.Pool // sync mode: delivery channels, one per Send in flight
	drained chan struct{}
}

// newConfluent builds a librdkafka producer at its defaults with acks=all
// and compression off (linger 0 and a larger queue for confluent/linger0),
// and starts the goroutine that reads its events.
func newConfluent(cfg clientConfig) (client, error) {
	cm := &kafka.ConfigMap{
		"bootstrap.servers":  strings.Join(cfg.addrs, ","),
		"acks":               "all",
		"compression.type":   "none",
		"enable.idempotence": cfg.idem,
		"log_level":          4, // warnings and worse; info lines would clutter the progress
	}
	if cfg.variant == "confluent/linger0" {
		(*cm)["linger.ms"] = 0
		(*cm)["queue.buffering.max.messages"] = maxBuffered
	}
	p, err := kafka.NewProducer(cm)
	if err != nil {
		return nil, err
	}
	c := &confluentClient{p: p, topic: benchTopic, done: cfg.done, drained: make(chan struct{})}
	c.chans.New = func() any { return make(chan kafka.Event, 1) }
	go func() { // delivery reports (async mode) and client-level errors
		defer close(c.drained)
		for ev := range p.Events() {
			switch e := ev.(type) {
			case *kafka.Message:
				if cfg.done != nil {
					cfg.done(e.TopicPartition.Error)
				}
			case kafka.Error:
				if e.IsFatal() {
					fmt.Printf("confluent: fatal: %v\n", e)
				}
			}
		}
	}()
	return c, nil
}

// message wraps a record for librdkafka (any partition: its partitioner).
func (c *confluentClient) message(key, value []byte) *kafka.Message {
	return &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &c.topic, Partition: kafka.PartitionAny},
		Key: key, Value: value}
}

func (c *confluentClient) Send(ctx context.Context, key, value []byte) error {
	ch := c.chans.Get().(chan kafka.Event)
	if err := c.p.Produce(c.message(key, value), ch); err != nil {
		c.chans.Put(ch)
		return err
	}
	select {
	case ev := <-ch:
		c.chans.Put(ch)
		if m, ok := ev.(*kafka.Message); ok {
			return m.TopicPartition.Error
		}
		return fmt.Errorf("confluent: unexpected delivery event %v", ev)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *confluentClient) Produce(key, value []byte) {
	for {
		err := c.p.Produce(c.message(key, value), nil)
		if err == nil {
			return
		}
		var ke kafka.Error
		if !errors.As(err, &ke) || ke.Code() != kafka.ErrQueueFull {
			c.done(err) // refused: no delivery report will come
			return
		}
		time.Sleep(100 * time.Microsecond) // local queue full: let deliveries drain it
	}
}

func (c *confluentClient) Close() {
	c.p.Flush(10_000)
	c.p.Close()
	<-c.drained
}
