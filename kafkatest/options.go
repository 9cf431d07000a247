package kafkatest

import (
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Option configures a cluster before it starts. Options are applied in order;
// only this package defines them.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// config is everything a Cluster is started with. It is never changed after
// Start.
type config struct {
	brokers      int
	brokersSet   bool // WithBrokers was given; see resolvedBrokers
	topics       []topicSpec
	autoCreate   bool
	autoCreateNP int32
	ports        []int
	kfakeOpts    []kfake.Opt

	saslUsers     []saslUser
	tls           bool
	tlsClientCert bool
	tlsHosts      []string // WithTLSHosts

	// closeTimeout bounds how long Close, or a failed Start, waits for the
	// cluster's goroutines to stop. Tests shorten it.
	closeTimeout time.Duration
}

type topicSpec struct {
	name       string
	partitions int32
}

// defaultConfig holds every default: one broker, no topics, no automatic
// topic creation, random ports, 10s for Close.
func defaultConfig() config {
	return config{closeTimeout: 10 * time.Second}
}

// WithBrokers sets how many brokers the cluster runs, overriding the default
// of 1. Node IDs are 0 through n-1. If WithPorts is also given, n must equal
// the number of ports.
func WithBrokers(n int) Option {
	return optionFunc(func(c *config) { c.brokers, c.brokersSet = n, true })
}

// WithTopic creates topic name with the given number of partitions (at least
// 1) when the cluster starts. It can be repeated; if a name is given twice,
// the last partition count wins. By default no topics exist.
func WithTopic(name string, partitions int32) Option {
	return optionFunc(func(c *config) {
		c.topics = append(c.topics, topicSpec{name, partitions})
	})
}

// WithAutoCreateTopics lets a metadata request that asks for automatic topic
// creation create a missing topic with the given number of partitions (at
// least 1). It is off by default, as on a production cluster, so producing to
// an unknown topic fails. Corresponds to the broker property
// auto.create.topics.enable plus num.partitions.
func WithAutoCreateTopics(partitions int32) Option {
	return optionFunc(func(c *config) {
		c.autoCreate = true
		c.autoCreateNP = partitions
	})
}

// WithPorts sets the port each broker listens on at 127.0.0.1, one per broker,
// overriding the default of a random free port (0) for every broker. Without
// WithBrokers the number of brokers is len(ports).
func WithPorts(ports ...int) Option {
	return optionFunc(func(c *config) { c.ports = append([]int(nil), ports...) })
}

// WithKfakeOptions passes options straight to kfake.NewCluster, for what this
// package does not wrap (ACLs, broker configs, a logger, ...). They are
// applied after the options derived from this package's, so they win on
// conflict. CreateTopic and ReadAll do not know about SASL or TLS configured
// this way, so they fail against such a cluster; use WithSASL and WithTLS.
func WithKfakeOptions(opts ...kfake.Opt) Option {
	return optionFunc(func(c *config) { c.kfakeOpts = append(c.kfakeOpts, opts...) })
}

// resolvedBrokers returns the number of brokers to start.
func (c *config) resolvedBrokers() int {
	switch {
	case c.brokersSet:
		return c.brokers
	case len(c.ports) > 0:
		return len(c.ports)
	default:
		return 1
	}
}

// validate reports the first bad option by name.
func (c *config) validate() error {
	if c.brokersSet && c.brokers < 1 {
		return fmt.Errorf("kafkatest: WithBrokers: %d brokers, need at least 1", c.brokers)
	}
	if len(c.ports) > 0 && c.brokersSet && len(c.ports) != c.brokers {
		return fmt.Errorf("kafkatest: WithPorts: %d ports for %d brokers, need one per broker", len(c.ports), c.brokers)
	}
	for _, p := range c.ports {
		if p < 0 || p > 65535 {
			return fmt.Errorf("kafkatest: WithPorts: port %d out of range [0, 65535]", p)
		}
	}
	for _, t := range c.topics {
		if t.name == "" {
			return errors.New("kafkatest: WithTopic: empty topic name")
		}
		if t.partitions < 1 {
			return fmt.Errorf("kafkatest: WithTopic: topic %q has %d partitions, need at least 1", t.name, t.partitions)
		}
	}
	if c.autoCreate && c.autoCreateNP < 1 {
		return fmt.Errorf("kafkatest: WithAutoCreateTopics: %d partitions, need at least 1", c.autoCreateNP)
	}
	return c.validateSecurity()
}

// kfakeOptions translates the config into kfake options; sec (from
// securityOptions) goes before the user's own kfake options.
func (c *config) kfakeOptions(sec ...kfake.Opt) []kfake.Opt {
	opts := []kfake.Opt{kfake.NumBrokers(c.resolvedBrokers())}
	if len(c.ports) > 0 {
		opts = append(opts, kfake.Ports(c.ports...))
	}
	for _, t := range c.topics {
		opts = append(opts, kfake.SeedTopics(t.partitions, t.name))
	}
	if c.autoCreate {
		opts = append(opts,
			kfake.AllowAutoTopicCreation(),
			kfake.DefaultNumPartitions(int(c.autoCreateNP)),
		)
	}
	opts = append(opts, sec...)
	return append(opts, c.kfakeOpts...)
}
