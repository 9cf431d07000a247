package kafkatest

// Goroutines: one per running broker JVM (node.wait), which waits for the
// process to exit, records its error and closes node.exited. It is started
// by startNode and exits when the JVM does; Close, Stop, Kill and Restart
// wait for it. No other goroutines.
//
// Locking: mu guards closed and, per node, cmd/exited/waitErr (replaced on
// every start). Lifecycle calls (Start, Stop, Kill, Restart, Close) are
// serialized by opMu, taken before mu; mu is never held while waiting for a
// process.
//
// No JVM outlives the process that started it: each is started with
// Pdeathsig SIGKILL (Linux), so the kernel kills it when the starting
// thread's process dies, even by SIGKILL; Close stops them on a normal exit.
// Go never retires an unlocked OS thread, so Pdeathsig does not fire early.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Errors of a real cluster's lifecycle. Each is wrapped with details; match
// with errors.Is.
var (
	// ErrRealConfig means a RealOption is invalid.
	ErrRealConfig = errors.New("kafkatest: bad real cluster option")
	// ErrStart means a node did not become ready; the error carries the
	// tail of its log.
	ErrStart = errors.New("kafkatest: real Kafka node did not start")
	// ErrNoSuchNode means a node index is out of range.
	ErrNoSuchNode = errors.New("kafkatest: no such node")
	// ErrExternal means a lifecycle call was made on a cluster given by
	// KPUSH_KAFKA_SEEDS, which this process does not run.
	ErrExternal = errors.New("kafkatest: cluster is external (KPUSH_KAFKA_SEEDS); it cannot be stopped or restarted here")
)

// RealCluster is an Apache Kafka cluster of 1 or 3 KRaft nodes (combined
// broker and controller) running as child JVMs on 127.0.0.1, or an existing
// cluster named by KPUSH_KAFKA_SEEDS. It is safe for concurrent use; Close it
// when done.
type RealCluster struct {
	cfg       realConfig
	install   *Install
	clusterID string
	root      string   // parent of the node directories; "" if external
	seeds     []string // external cluster only

	opMu sync.Mutex // serializes lifecycle calls; taken before mu

	mu     sync.Mutex // guards the following fields and each node's process fields
	closed bool
	nodes  []*realNode
}

// realNode is one JVM. id, info and props are fixed; the process fields are
// replaced by each start, under RealCluster.mu.
type realNode struct {
	info NodeInfo

	cmd     *exec.Cmd
	exited  chan struct{} // closed by the wait goroutine; nil if never started
	waitErr error         // written before exited is closed
}

// NewRealCluster provisions the Kafka version (see Provision), formats and
// starts the nodes, and waits until a Metadata response lists every node.
// If KPUSH_KAFKA_SEEDS is set it starts nothing and returns that cluster.
// On failure nothing is left running and the error carries the tail of the
// failing node's log.
func NewRealCluster(ctx context.Context, opts ...RealOption) (*RealCluster, error) {
	cfg := defaultRealConfig()
	for _, o := range opts {
		o.applyReal(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if seeds := Seeds(); len(seeds) > 0 {
		c := &RealCluster{cfg: cfg, seeds: seeds}
		if err := c.waitReady(ctx, 0); err != nil {
			return nil, err
		}
		return c, nil
	}
	in, err := Provision(ctx, cfg.version)
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "kpush-kafka-")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	c := &RealCluster{cfg: cfg, install: in, root: root, clusterID: newClusterID()}
	if err := c.start(ctx); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

// Seeds returns the addresses in KPUSH_KAFKA_SEEDS, or nil.
func Seeds() []string {
	var seeds []string
	for _, s := range strings.Split(os.Getenv(EnvKafkaSeeds), ",") {
		if s = strings.TrimSpace(s); s != "" {
			seeds = append(seeds, s)
		}
	}
	return seeds
}

// newClusterID returns a random KRaft cluster ID (a base64url UUID). Like
// Kafka's Uuid.randomUuid it never starts with '-', which StorageTool's
// argument parser would take for a flag.
func newClusterID() string {
	for {
		var b [16]byte
		_, _ = rand.Read(b[:])
		if id := base64.RawURLEncoding.EncodeToString(b[:]); id[0] != '-' {
			return id
		}
	}
}

// start lays out, formats and starts every node, then waits for readiness.
func (c *RealCluster) start(ctx context.Context) error {
	ports, err := freePorts(2 * c.cfg.nodes)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStart, err)
	}
	for i := range c.cfg.nodes {
		dir := filepath.Join(c.root, "node"+strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("%w: %w", ErrStart, err)
		}
		c.nodes = append(c.nodes, &realNode{info: NodeInfo{
			ID:             i,
			Port:           ports[2*i],
			ControllerPort: ports[2*i+1],
			Dir:            dir,
			LogFile:        filepath.Join(dir, "server.log"),
		}})
	}
	for _, n := range c.nodes {
		if err := c.format(ctx, n); err != nil {
			return err
		}
	}
	for _, n := range c.nodes {
		if err := c.startNode(n); err != nil {
			return err
		}
	}
	return c.waitReady(ctx, c.cfg.startTimeout)
}

// Addrs returns the client addresses of the nodes ("127.0.0.1:port", in node
// order), including stopped ones, or the KPUSH_KAFKA_SEEDS addresses.
func (c *RealCluster) Addrs() []string {
	if c.seeds != nil {
		return slices.Clone(c.seeds)
	}
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(n.info.Port))
	}
	return addrs
}

// External reports whether the cluster is one named by KPUSH_KAFKA_SEEDS.
func (c *RealCluster) External() bool { return c.seeds != nil }

// Version returns the Kafka version the nodes run ("" if external).
func (c *RealCluster) Version() string {
	if c.install == nil {
		return ""
	}
	return c.install.Version
}

// Nodes returns the number of nodes this process runs (0 if external).
func (c *RealCluster) Nodes() int { return len(c.nodes) }

// Node returns node i's ports and paths.
func (c *RealCluster) Node(i int) (NodeInfo, error) {
	if c.seeds != nil {
		return NodeInfo{}, ErrExternal
	}
	if i < 0 || i >= len(c.nodes) {
		return NodeInfo{}, fmt.Errorf("%w: %d of %d", ErrNoSuchNode, i, len(c.nodes))
	}
	return c.nodes[i].info, nil
}

// PID returns the process ID of node i's JVM, or 0 if it is not running.
func (c *RealCluster) PID(i int) int {
	if i < 0 || i >= len(c.nodes) {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if !n.running() {
		return 0
	}
	return n.cmd.Process.Pid
}

// LogTail returns the last lines of node i's broker log.
func (c *RealCluster) LogTail(i, lines int) string {
	if i < 0 || i >= len(c.nodes) {
		return ""
	}
	n := c.nodes[i]
	b, _ := os.ReadFile(n.info.LogFile)
	out, _ := os.ReadFile(filepath.Join(n.info.Dir, "stdout.log"))
	return tail(append(b, out...), lines)
}

// failureLog returns what explains a node's failure: its first ERROR and
// FATAL lines (a failed broker logs pages of orderly shutdown after the
// cause), then the tail of its log.
func (c *RealCluster) failureLog(i int) string {
	n := c.nodes[i]
	b, _ := os.ReadFile(n.info.LogFile)
	out, _ := os.ReadFile(filepath.Join(n.info.Dir, "stdout.log"))
	var errs []string
	for _, l := range strings.Split(string(append(b, out...)), "\n") {
		if strings.Contains(l, " ERROR ") || strings.Contains(l, " FATAL ") || strings.Contains(l, "Exception") {
			errs = append(errs, l)
			if len(errs) == 12 {
				break
			}
		}
	}
	return fmt.Sprintf("first errors:\n%s\nlast lines:\n%s", strings.Join(errs, "\n"), c.LogTail(i, 15))
}

// node checks i and returns the node, for a lifecycle call.
func (c *RealCluster) node(i int) (*realNode, error) {
	if c.seeds != nil {
		return nil, ErrExternal
	}
	if i < 0 || i >= len(c.nodes) {
		return nil, fmt.Errorf("%w: %d of %d", ErrNoSuchNode, i, len(c.nodes))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClosed
	}
	return c.nodes[i], nil
}

// Stop stops node i cleanly (SIGTERM: controlled shutdown) and waits for the
// JVM to exit; after the stop timeout (60s) it is killed. Stopping a stopped
// node does nothing.
func (c *RealCluster) Stop(i int) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	n, err := c.node(i)
	if err != nil {
		return err
	}
	return c.signal(n, syscall.SIGTERM)
}

// Kill kills node i with SIGKILL (kill -9) and waits for it to exit.
func (c *RealCluster) Kill(i int) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	n, err := c.node(i)
	if err != nil {
		return err
	}
	return c.signal(n, syscall.SIGKILL)
}

// Restart stops node i cleanly if it is running, starts it again with the
// same ports and data, and waits until every running node is listed in a
// Metadata response. ctx bounds the wait (and the start timeout applies).
func (c *RealCluster) Restart(ctx context.Context, i int) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	n, err := c.node(i)
	if err != nil {
		return err
	}
	if err := c.signal(n, syscall.SIGTERM); err != nil {
		return err
	}
	if err := c.startNode(n); err != nil {
		return err
	}
	return c.waitReady(ctx, c.cfg.startTimeout)
}

// Close stops every node (SIGTERM, then SIGKILL after the stop timeout),
// waits for the JVMs to exit and removes the nodes' directories (unless
// WithKeepDirs). It is idempotent. For an external cluster it does nothing.
func (c *RealCluster) Close() error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	if c.seeds != nil {
		return nil
	}
	// Stop all nodes at once: a lone survivor of a 3-node quorum waits long
	// for its peers during controlled shutdown.
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.signal(n, syscall.SIGTERM)
		}()
	}
	wg.Wait()
	if !c.cfg.keepDirs && c.root != "" {
		errs = append(errs, os.RemoveAll(c.root))
	}
	return errors.Join(errs...)
}
