package kpush_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// ExampleNew creates a producer for a cluster. New only validates the
// options; it connects when the first record is sent.
func ExampleNew() {
	c, err := kafkatest.NewCluster(kafkatest.WithTopic("events", 3))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	p, err := kpush.New(
		kpush.WithBrokers(c.Addrs()...),
		kpush.WithCompression(kpush.Zstd),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(context.Background())
	fmt.Println("ready")
	// Output: ready
}

// ExampleNew_invalidOption shows the error for a bad option.
func ExampleNew_invalidOption() {
	_, err := kpush.New(kpush.WithBrokers("localhost:9092"), kpush.WithMaxInflight(9))
	var ce *kpush.ConfigError
	fmt.Println(errors.As(err, &ce), ce.Option)
	fmt.Println(err)
	// Output:
	// true WithMaxInflight
	// kpush: invalid option WithMaxInflight: 9 is more than 5, the most idempotence allows
}

// ExampleProducer_Send sends one record and waits for the acknowledgement.
func ExampleProducer_Send() {
	c, err := kafkatest.NewCluster(kafkatest.WithTopic("events", 1))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(context.Background())

	ctx := context.Background()
	res, err := p.Send(ctx, &kpush.Record{Topic: "events", Key: []byte("user-1"), Value: []byte("signed up")})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("written to %s[%d] at offset %d\n", res.Topic, res.Partition, res.Offset)
	// Output: written to events[0] at offset 0
}

// ExampleProducer_Send_errors shows how to tell "not written" from
// "outcome unknown".
func ExampleProducer_Send_errors() {
	c, err := kafkatest.NewCluster(kafkatest.WithTopic("events", 1))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(context.Background())

	_, err = p.Send(context.Background(), &kpush.Record{Topic: "no-such-topic"})
	switch {
	case errors.Is(err, kpush.ErrNotWritten):
		fmt.Println("not written, safe to retry:", errors.Is(err, kpush.ErrUnknownTopic))
	case errors.Is(err, kpush.ErrOutcomeUnknown):
		fmt.Println("may be written; retrying may duplicate")
	}
	// Output: not written, safe to retry: true
}

// ExampleProducer_SendAsync pipelines records from one goroutine.
func ExampleProducer_SendAsync() {
	c, err := kafkatest.NewCluster(kafkatest.WithTopic("events", 2))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(context.Background())

	ctx := context.Background()
	var mu sync.Mutex
	acked := 0
	for i := range 1000 {
		rec := &kpush.Record{Topic: "events", Value: fmt.Appendf(nil, "record %d", i)}
		p.SendAsync(ctx, rec, func(_ kpush.Result, err error) {
			if err != nil {
				log.Print(err)
				return
			}
			mu.Lock()
			acked++
			mu.Unlock()
		})
	}
	if err := p.Flush(ctx); err != nil {
		log.Fatal(err)
	}
	mu.Lock()
	fmt.Println("acknowledged:", acked)
	mu.Unlock()
	// Output: acknowledged: 1000
}

// ExampleProducer_Close gives every buffered record its outcome and stops.
func ExampleProducer_Close() {
	c, err := kafkatest.NewCluster(kafkatest.WithTopic("events", 1))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	p.SendAsync(ctx, &kpush.Record{Topic: "events", Value: []byte("last words")}, nil)
	if err := p.Close(ctx); err != nil { // flushes first
		log.Fatal(err)
	}
	_, err = p.Send(ctx, &kpush.Record{Topic: "events"})
	fmt.Println(errors.Is(err, kpush.ErrClosed), p.Stats().RecordsSent)
	// Output: true 1
}
