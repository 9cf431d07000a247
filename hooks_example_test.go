package kpush_test

import (
	"context"
	"fmt"
	"log"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// outcomes is a hook that prints each record's outcome and cause.
type outcomes struct{}

func (outcomes) OnRecordDone(ev kpush.RecordDoneEvent) {
	if ev.Err != nil {
		fmt.Printf("%s %q: %s, cause %s\n", ev.Topic, ev.Record.Value, ev.Outcome(), kpush.CauseOf(ev.Err))
		return
	}
	fmt.Printf("%s %q: %s at offset %d\n", ev.Topic, ev.Record.Value, ev.Outcome(), ev.Result.Offset)
}

// ExampleWithHooks installs a hook that sees every record's outcome.
func ExampleWithHooks() {
	c, err := kafkatest.NewCluster(kafkatest.WithTopic("events", 1))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...), kpush.WithHooks(outcomes{}))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(context.Background())

	ctx := context.Background()
	p.Send(ctx, &kpush.Record{Topic: "events", Value: []byte("signed up")})
	p.Send(ctx, &kpush.Record{Topic: "no such topic!", Value: []byte("lost")})
	// Output:
	// events "signed up": acked at offset 0
	// no such topic! "lost": not_written, cause invalid_topic
}
