package kafkatest

// Talking to a real cluster: readiness, topic creation, reading back. No
// goroutines of its own; each call uses a short-lived kgo client.

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// client returns a kgo client seeded with the cluster's addresses.
func (c *RealCluster) client(opts ...kgo.Opt) (*kgo.Client, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Addrs()...)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: new client: %w", err)
	}
	return cl, nil
}

// CreateTopic creates topic name with the given number of partitions (at
// least 1) and the broker's default replication factor (the node count).
// It waits until the topic's partitions have leaders known to the brokers'
// metadata. An existing topic is an error matching kerr.TopicAlreadyExists.
func (c *RealCluster) CreateTopic(ctx context.Context, name string, partitions int32) error {
	return c.CreateTopicWithConfig(ctx, name, partitions, nil)
}

// CreateTopicWithConfig is CreateTopic with topic configs (e.g.
// "message.timestamp.after.max.ms", "max.message.bytes").
func (c *RealCluster) CreateTopicWithConfig(ctx context.Context, name string, partitions int32, configs map[string]string) error {
	if partitions < 1 {
		return fmt.Errorf("kafkatest: create topic %q: %d partitions, need at least 1", name, partitions)
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := createTopic(ctx, cl, name, partitions, configs); err != nil {
		return err
	}
	return waitLeaders(ctx, cl, name, partitions)
}

// waitLeaders waits until every partition of topic has a leader in a
// Metadata response: CreateTopics returns before the brokers learn of it.
func waitLeaders(ctx context.Context, cl *kgo.Client, topic string, partitions int32) error {
	backoff := 20 * time.Millisecond
	for {
		req := kmsg.NewPtrMetadataRequest()
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err == nil && len(resp.Topics) == 1 && resp.Topics[0].ErrorCode == 0 &&
			int32(len(resp.Topics[0].Partitions)) == partitions {
			ok := true
			for _, p := range resp.Topics[0].Partitions {
				ok = ok && p.ErrorCode == 0 && p.Leader >= 0
			}
			if ok {
				return nil
			}
		}
		if err := wait(ctx, backoff); err != nil {
			return fmt.Errorf("kafkatest: topic %q has no leaders yet: %w", topic, err)
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

// ReadAll reads every record of topic up to the high watermark, as
// Cluster.ReadAll does.
func (c *RealCluster) ReadAll(ctx context.Context, topic string) ([]Record, error) {
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	return readAll(ctx, cl, topic)
}

// waitReady waits until a Metadata response lists every running node (for
// an external cluster: any broker), a JVM exits, or timeout (if positive)
// or ctx ends.
func (c *RealCluster) waitReady(ctx context.Context, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	c.mu.Lock()
	want := map[int32]bool{}
	var exits []chan struct{}
	var exitNodes []*realNode
	for _, n := range c.nodes {
		if n.running() {
			want[int32(n.info.ID)] = true
			exits = append(exits, n.exited)
			exitNodes = append(exitNodes, n)
		}
	}
	c.mu.Unlock()

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...), kgo.RetryTimeout(2*time.Second))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStart, err)
	}
	defer cl.Close()
	backoff := 50 * time.Millisecond
	var last error
	for {
		for i, ex := range exits {
			select {
			case <-ex:
				n := exitNodes[i]
				c.mu.Lock()
				werr := n.waitErr
				c.mu.Unlock()
				return fmt.Errorf("%w: node %d exited (%v); log %s:\n%s", ErrStart, n.info.ID, werr, n.info.LogFile, c.failureLog(n.info.ID))
			default:
			}
		}
		last = c.metadataLists(ctx, cl, want)
		if last == nil {
			return nil
		}
		if err := wait(ctx, backoff); err != nil {
			msg := fmt.Sprintf("%v waiting for a Metadata response listing every node (last: %v)", err, last)
			for _, n := range exitNodes {
				msg += fmt.Sprintf("\nnode %d log %s:\n%s", n.info.ID, n.info.LogFile, c.failureLog(n.info.ID))
			}
			return fmt.Errorf("%w: %s", ErrStart, msg)
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// metadataLists asks for metadata and checks that every node in want (or,
// if want is empty, at least one broker) is listed.
func (c *RealCluster) metadataLists(ctx context.Context, cl *kgo.Client, want map[int32]bool) error {
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{}
	resp, err := req.RequestWith(rctx, cl)
	if err != nil {
		return err
	}
	got := map[int32]bool{}
	for _, b := range resp.Brokers {
		got[b.NodeID] = true
	}
	if len(want) == 0 && len(got) > 0 {
		return nil
	}
	for id := range want {
		if !got[id] {
			return fmt.Errorf("node %d not in metadata (brokers %v)", id, resp.Brokers)
		}
	}
	return nil
}
