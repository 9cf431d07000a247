package kpush_test

import (
	"context"
	"fmt"
	"log"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// ExamplePartitionerFunc routes records by their first header's value and
// sends one record to a partition of its own choosing with UsePartition
// (honoured by every partitioner; the zero Record leaves the choice to the
// partitioner).
func ExamplePartitionerFunc() {
	c, err := kafkatest.NewCluster(kafkatest.WithTopic("events", 4))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	byRegion := kpush.PartitionerFunc(func(_ string, r *kpush.Record, n int) int {
		if len(r.Headers) > 0 && string(r.Headers[0].Value) == "eu" {
			return 1 % n
		}
		return 0
	})
	p, err := kpush.New(kpush.WithBrokers(c.Addrs()...), kpush.WithPartitioner(byRegion))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(context.Background())

	ctx := context.Background()
	eu, err := p.Send(ctx, &kpush.Record{Topic: "events", Value: []byte("a"), Headers: []kpush.Header{{Key: "region", Value: []byte("eu")}}})
	if err != nil {
		log.Fatal(err)
	}
	own, err := p.Send(ctx, &kpush.Record{Topic: "events", Value: []byte("b"), Partition: 3, UsePartition: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(eu.Partition, own.Partition)
	// Output: 1 3
}
