package kafkatest

import (
	"context"
	"fmt"
	"time"
)

// Backend is what a test needs from a cluster, so the same test code can run
// against the fake Cluster or a RealCluster. Both implement it.
type Backend interface {
	// Addrs returns seed broker addresses.
	Addrs() []string
	// CreateTopic creates a topic with the broker's default replication.
	CreateTopic(ctx context.Context, name string, partitions int32) error
	// ReadAll reads a topic back up to its high watermark.
	ReadAll(ctx context.Context, topic string) ([]Record, error)
	// Close stops the cluster (a no-op for an external one).
	Close() error
}

var (
	_ Backend = (*Cluster)(nil)
	_ Backend = (*RealCluster)(nil)
)

// RealOption configures a RealCluster before it starts. Only this package
// defines them.
type RealOption interface {
	applyReal(*realConfig)
}

type realOptionFunc func(*realConfig)

func (f realOptionFunc) applyReal(c *realConfig) { f(c) }

// NodeInfo describes one node of a real cluster, for WithPropertiesFunc and
// Node.
type NodeInfo struct {
	ID             int    // node.id, 0 through n-1
	Port           int    // client listener (PLAINTEXT) on 127.0.0.1
	ControllerPort int    // KRaft controller listener on 127.0.0.1
	Dir            string // private directory: properties, data, log
	LogFile        string // the broker's log (log4j)
}

// realConfig is everything a RealCluster is started with.
type realConfig struct {
	nodes        int
	version      string
	props        [][2]string
	propsFunc    func(NodeInfo, map[string]string)
	jvmOpts      []string
	startTimeout time.Duration
	stopTimeout  time.Duration
	keepDirs     bool
}

// defaultRealConfig holds every default: one node, KafkaVersion(), a 512 MiB
// serial-GC JVM tuned to start fast, 3 minutes to become ready, 60 seconds
// for a clean stop.
func defaultRealConfig() realConfig {
	return realConfig{
		nodes:        1,
		version:      KafkaVersion(),
		jvmOpts:      []string{"-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k"},
		startTimeout: 3 * time.Minute,
		stopTimeout:  60 * time.Second,
	}
}

func (c *realConfig) validate() error {
	switch {
	case c.nodes != 1 && c.nodes != 3:
		return fmt.Errorf("%w: WithNodes(%d): want 1 or 3", ErrRealConfig, c.nodes)
	case !versionRE.MatchString(c.version):
		return fmt.Errorf("%w: %q, want e.g. %s", ErrBadVersion, c.version, DefaultKafkaVersion)
	case c.startTimeout <= 0 || c.stopTimeout <= 0:
		return fmt.Errorf("%w: timeouts must be positive", ErrRealConfig)
	}
	for _, kv := range c.props {
		if kv[0] == "" {
			return fmt.Errorf("%w: WithBrokerProperty: empty key", ErrRealConfig)
		}
	}
	return nil
}

// WithNodes sets how many nodes the cluster runs: 1 (the default) or 3.
// Every node is a combined KRaft broker and controller. With 3 nodes topics
// default to replication factor 3 and min.insync.replicas=2.
func WithNodes(n int) RealOption {
	return realOptionFunc(func(c *realConfig) { c.nodes = n })
}

// WithKafkaVersion sets the Apache Kafka version, e.g. "4.0.2", overriding
// KafkaVersion(). It is fetched by Provision on first use.
func WithKafkaVersion(v string) RealOption {
	return realOptionFunc(func(c *realConfig) { c.version = v })
}

// WithBrokerProperty sets a broker property on every node, overriding the
// default (e.g. "producer.id.expiration.ms", "connections.max.idle.ms").
// It can be repeated; the last value of a key wins.
func WithBrokerProperty(key, value string) RealOption {
	return realOptionFunc(func(c *realConfig) { c.props = append(c.props, [2]string{key, value}) })
}

// WithPropertiesFunc calls f for each node with its final properties before
// the node is formatted, so a test can rewrite them (listeners for a proxy,
// SASL or TLS). f runs on every (re)start of a node; it must not block.
func WithPropertiesFunc(f func(n NodeInfo, props map[string]string)) RealOption {
	return realOptionFunc(func(c *realConfig) { c.propsFunc = f })
}

// WithJVMOptions replaces the JVM flags of the broker processes (default
// -Xms128m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k, which
// start fast on a small machine; benchmarks want the full JIT instead).
func WithJVMOptions(flags ...string) RealOption {
	return realOptionFunc(func(c *realConfig) { c.jvmOpts = append([]string(nil), flags...) })
}

// WithStartTimeout bounds how long starting (or restarting) the cluster may
// take until every node is listed in a Metadata response. Default 3 minutes.
func WithStartTimeout(d time.Duration) RealOption {
	return realOptionFunc(func(c *realConfig) { c.startTimeout = d })
}

// WithKeepDirs keeps the nodes' directories (data, logs) after Close, for
// debugging. By default they are removed.
func WithKeepDirs() RealOption {
	return realOptionFunc(func(c *realConfig) { c.keepDirs = true })
}
