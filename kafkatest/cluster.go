package kafkatest

// Goroutines: a Cluster starts none of its own. kfake starts one accept
// loop per broker, one run loop, two goroutines per client connection, and
// short-lived helpers from those; every one of them carries the pprof label
// of its cluster (see goroutines.go), which is how Close waits for them.
//
// Locking: mu guards started, closed, fake and addrs. Close runs its
// shutdown once, outside mu, so Addrs and Fake never wait on a slow Close.

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kpush/kpush/internal/tlsgen"
)

var (
	errNotStarted     = errors.New("kafkatest: cluster not started")
	errClosed         = errors.New("kafkatest: cluster closed")
	errAlreadyStarted = errors.New("kafkatest: cluster already started")
)

// clusterIDs numbers clusters within the process, for goroutine labels.
var clusterIDs atomic.Int64

// Cluster is a fake Kafka cluster running in this process and listening on
// 127.0.0.1, like an httptest.Server for Kafka. It is safe for concurrent use.
// Close it when done.
type Cluster struct {
	cfg   config
	label string // value of the pprof label on the cluster's goroutines

	closeOnce sync.Once
	closeErr  error // set inside closeOnce

	mu      sync.Mutex // guards the following fields
	started bool
	closed  bool
	fake    *kfake.Cluster
	addrs   []string
	certs   *tlsgen.Bundle // WithTLS; set by Start

	sleeps sleeps // control functions in SleepControl (sleep.go)
}

// NewCluster starts a cluster configured by opts and returns it. Close it
// when done. It returns an error if an option is invalid or a port cannot be
// bound.
func NewCluster(opts ...Option) (*Cluster, error) {
	c := NewUnstartedCluster(opts...)
	if err := c.Start(); err != nil {
		return nil, err
	}
	return c, nil
}

// NewUnstartedCluster returns a cluster configured by opts that is not yet
// running. Call Start to run it, and Close when done. Options are validated
// by Start.
func NewUnstartedCluster(opts ...Option) *Cluster {
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	return &Cluster{
		cfg:   cfg,
		label: strconv.FormatInt(clusterIDs.Add(1), 10),
	}
}

// NewTestCluster starts a cluster for a test or benchmark and registers Close
// with tb.Cleanup. A failure to start calls tb.Fatal; a Close that finds
// goroutines still running calls tb.Error.
func NewTestCluster(tb testing.TB, opts ...Option) *Cluster {
	tb.Helper()
	c, err := NewCluster(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Error(err)
		}
	})
	return c
}

// Start validates the options and starts the cluster. It may be called once;
// later calls, and a call after Close, return an error. If Start fails, the
// cluster cannot be started again and nothing is left running.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return errClosed
	case c.started:
		return errAlreadyStarted
	}
	c.started = true
	if err := c.cfg.validate(); err != nil {
		return err
	}

	secOpts, certs, err := c.cfg.securityOptions()
	if err != nil {
		return err
	}
	opts := c.cfg.kfakeOptions(secOpts...)
	var fake *kfake.Cluster
	// Every goroutine kfake starts, and every goroutine those start,
	// inherits this label.
	pprof.Do(context.Background(), pprof.Labels(labelKey, c.label), func(context.Context) {
		fake, err = kfake.NewCluster(opts...)
	})
	if err != nil {
		err = fmt.Errorf("kafkatest: start cluster: %w", err)
		// kfake starts its accept loops even when it fails.
		if werr := waitGoroutines(c.label, c.cfg.closeTimeout); werr != nil {
			err = errors.Join(err, werr)
		}
		return err
	}
	c.certs = certs
	addrs := fake.ListenAddrs()
	if len(c.cfg.saslUsers) > 0 {
		if err := c.advertiseSASLHandshakeV0(fake, addrs); err != nil {
			fake.Close()
			return errors.Join(err, waitGoroutines(c.label, c.cfg.closeTimeout))
		}
		if err := c.answerBadCredentials(fake, addrs[0]); err != nil {
			fake.Close()
			return errors.Join(err, waitGoroutines(c.label, c.cfg.closeTimeout))
		}
	} else {
		answerHandshakeWithoutSASL(fake)
	}
	c.fake = fake
	c.addrs = addrs
	return nil
}

// Addrs returns the brokers' addresses as "127.0.0.1:port", in node ID order,
// for use as seed brokers. It returns nil before Start.
func (c *Cluster) Addrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.addrs...)
}

// Fake returns the underlying kfake cluster, for fault injection with
// ControlKey, MoveTopicPartition, CoordinatorFor and the like. It returns nil
// before Start. Do not close it directly; use Close.
func (c *Cluster) Fake() *kfake.Cluster {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fake
}

// running returns the addresses of a started, not yet closed cluster.
func (c *Cluster) running() ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return nil, errClosed
	case c.fake == nil:
		return nil, errNotStarted
	}
	return append([]string(nil), c.addrs...), nil
}

// Close stops the cluster, dropping client connections, and waits for all of
// its goroutines to stop. If some are still running after 10s it returns an
// error listing their stacks; a kfake control function that never returns is
// the usual cause. Close is idempotent: later and concurrent calls wait for
// the first and return its result. Closing a cluster that was never started
// only prevents it from starting.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		fake := c.fake
		c.mu.Unlock()
		if fake == nil {
			return
		}
		// Sleeping control functions resume before kfake closes (sleep.go);
		// one that does not within the timeout shows up in the goroutines
		// left running.
		c.endSleeps(c.cfg.closeTimeout)
		fake.Close()
		c.closeErr = waitGoroutines(c.label, c.cfg.closeTimeout)
	})
	return c.closeErr
}
