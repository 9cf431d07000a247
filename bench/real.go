package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpush/kpush/kafkatest"
)

// realJVMOptions are the broker JVM's flags for benchmarks: the heap and
// collector settings Kafka's own kafka-server-start.sh and
// kafka-run-class.sh use, with the full JIT (kafkatest's test defaults
// stop at C1 to start fast, which would slow the broker down).
var realJVMOptions = []string{
	"-Xms1g", "-Xmx1g", "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
	"-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
	"-XX:MaxInlineLevel=15", "-Djava.awt.headless=true",
}

// realLayouts are the layouts -real runs: one node, and three nodes with
// RF=3 and min.insync.replicas=2 (every client uses acks=all).
func realLayouts(version string) []layout {
	return []layout{
		{Brokers: 1, Partitions: 12, ValueSize: 100, Kafka: version},
		{Brokers: 3, Partitions: 12, ValueSize: 100, Kafka: version},
	}
}

// realBroker is a real Apache Kafka cluster serving every run of one
// layout. Its JVMs are child processes of the benchmark's parent process,
// never of the measured client process, so their CPU is not counted.
type realBroker struct {
	c     *kafkatest.RealCluster
	addrs []string
}

// startRealBroker starts (or, with KPUSH_KAFKA_SEEDS, attaches to) the
// layout's cluster and creates the bench topic. The topic keeps at most
// 64 MiB per partition, so repeated runs do not fill the disk.
func startRealBroker(ctx context.Context, l layout) (*realBroker, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	fmt.Fprintf(os.Stderr, "starting real Kafka %s, %d node(s)\n", l.Kafka, l.Brokers)
	c, err := kafkatest.NewRealCluster(ctx, kafkatest.WithNodes(l.Brokers), kafkatest.WithKafkaVersion(l.Kafka),
		kafkatest.WithJVMOptions(realJVMOptions...))
	if err != nil {
		return nil, fmt.Errorf("real broker: %w", err)
	}
	b := &realBroker{c: c, addrs: c.Addrs()}
	if err := b.resetTopic(ctx, l); err != nil {
		c.Close()
		return nil, err
	}
	return b, nil
}

// resetTopic deletes the bench topic if it exists and creates it again.
func (b *realBroker) resetTopic(ctx context.Context, l layout) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addrs...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.DeleteTopics(ctx, benchTopic); err != nil {
		return fmt.Errorf("real broker: delete topic: %w", err)
	}
	retention, segment := fmt.Sprint(64<<20), fmt.Sprint(16<<20)
	configs := map[string]*string{"retention.bytes": &retention, "segment.bytes": &segment}
	backoff := 100 * time.Millisecond
	for {
		// Deletion is asynchronous: TOPIC_ALREADY_EXISTS until it is done.
		resp, err := adm.CreateTopic(ctx, int32(l.Partitions), -1, configs, benchTopic)
		if err == nil {
			err = resp.Err
		}
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("real broker: create topic: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	for {
		md, err := adm.Metadata(ctx, benchTopic)
		if err == nil {
			ok := len(md.Topics[benchTopic].Partitions) == l.Partitions
			for _, p := range md.Topics[benchTopic].Partitions {
				ok = ok && p.Leader >= 0 && len(p.ISR) == l.Brokers
			}
			if ok {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("real broker: topic has no leaders: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (b *realBroker) close() {
	if err := b.c.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "real broker: close: %v\n", err)
	}
}
