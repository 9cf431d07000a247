package kafkatest_test

import (
	"fmt"

	"github.com/kpush/kpush/kafkatest"
)

func ExampleNewCluster() {
	c, err := kafkatest.NewCluster(kafkatest.WithBrokers(3), kafkatest.WithTopic("orders", 6))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	// Seed any Kafka client with c.Addrs().
	fmt.Println(len(c.Addrs()))
	// Output: 3
}
