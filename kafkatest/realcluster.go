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
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
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

// newClusterID returns a random KRaft cluster ID (a base64url UUID).
func newClusterID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
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

// freePorts returns n distinct free TCP ports on 127.0.0.1. The ports are
// released before the brokers bind them, so another process could take one
// in between; a node that cannot bind fails to start with that in its log.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// properties returns node n's server properties.
func (c *RealCluster) properties(n *realNode) map[string]string {
	nodes := c.cfg.nodes
	rf := strconv.Itoa(nodes)
	minISR := "1"
	if nodes >= 3 {
		minISR = "2"
	}
	p := map[string]string{
		"process.roles":                                    "broker,controller",
		"node.id":                                          strconv.Itoa(n.info.ID),
		"listeners":                                        fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", n.info.Port, n.info.ControllerPort),
		"advertised.listeners":                             fmt.Sprintf("PLAINTEXT://127.0.0.1:%d", n.info.Port),
		"listener.security.protocol.map":                   "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"controller.listener.names":                        "CONTROLLER",
		"inter.broker.listener.name":                       "PLAINTEXT",
		"log.dirs":                                         filepath.Join(n.info.Dir, "data"),
		"num.partitions":                                   "1",
		"default.replication.factor":                       rf,
		"min.insync.replicas":                              minISR,
		"offsets.topic.replication.factor":                 rf,
		"offsets.topic.num.partitions":                     "3",
		"transaction.state.log.replication.factor":         rf,
		"transaction.state.log.min.isr":                    minISR,
		"transaction.state.log.num.partitions":             "3",
		"share.coordinator.state.topic.replication.factor": rf,
		"share.coordinator.state.topic.min.isr":            minISR,
		"group.initial.rebalance.delay.ms":                 "0",
		"auto.create.topics.enable":                        "false",
		"num.network.threads":                              "2",
		"num.io.threads":                                   "4",
		"num.recovery.threads.per.data.dir":                "1",
		"log.cleaner.threads":                              "1",
		"log.cleaner.dedupe.buffer.size":                   strconv.Itoa(8 << 20),
	}
	if nodes == 1 {
		p["controller.quorum.bootstrap.servers"] = fmt.Sprintf("127.0.0.1:%d", n.info.ControllerPort)
	} else {
		var voters []string
		for _, o := range c.nodes {
			voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", o.info.ID, o.info.ControllerPort))
		}
		p["controller.quorum.voters"] = strings.Join(voters, ",")
	}
	for _, kv := range c.cfg.props {
		p[kv[0]] = kv[1]
	}
	if c.cfg.propsFunc != nil {
		c.cfg.propsFunc(n.info, p)
	}
	return p
}

// writeProperties writes node n's properties and log config.
func (c *RealCluster) writeProperties(n *realNode) (propsPath, logFlag string, err error) {
	p := c.properties(n)
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, p[k])
	}
	propsPath = filepath.Join(n.info.Dir, "server.properties")
	if err := os.WriteFile(propsPath, []byte(b.String()), 0o644); err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrStart, err)
	}
	logFlag, logPath, logConf := c.install.log4jConfig(n.info.Dir, n.info.LogFile)
	if err := os.WriteFile(logPath, []byte(logConf), 0o644); err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrStart, err)
	}
	return propsPath, logFlag, nil
}

// format runs kafka.tools.StorageTool format for node n.
func (c *RealCluster) format(ctx context.Context, n *realNode) error {
	props, logFlag, err := c.writeProperties(n)
	if err != nil {
		return err
	}
	args := []string{"-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", logFlag,
		"-cp", c.install.Classpath(), "kafka.tools.StorageTool", "format",
		"-t", c.clusterID, "-c", props, "--ignore-formatted"}
	if c.cfg.nodes == 1 {
		args = append(args, "--standalone")
	}
	cmd := exec.CommandContext(ctx, "java", args...)
	cmd.SysProcAttr = jvmSysProcAttr()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: node %d: StorageTool format: %w\n%s", ErrStart, n.info.ID, err, tail(out, 30))
	}
	return nil
}

// startNode starts node n's JVM and the goroutine that waits for it.
func (c *RealCluster) startNode(n *realNode) error {
	props, logFlag, err := c.writeProperties(n)
	if err != nil {
		return err
	}
	args := append(slices.Clone(c.cfg.jvmOpts), "-Djava.awt.headless=true", logFlag,
		"-Dkafka.logs.dir="+n.info.Dir, "-cp", c.install.Classpath(), "kafka.Kafka", props)
	cmd := exec.Command("java", args...)
	cmd.Dir = n.info.Dir
	cmd.SysProcAttr = jvmSysProcAttr()
	out, err := os.OpenFile(filepath.Join(n.info.Dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStart, err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = extraFilesHook
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("%w: node %d: %w", ErrStart, n.info.ID, err)
	}
	exited := make(chan struct{})
	c.mu.Lock()
	n.cmd, n.exited, n.waitErr = cmd, exited, nil
	c.mu.Unlock()
	go func() {
		err := cmd.Wait()
		out.Close()
		c.mu.Lock()
		n.waitErr = err
		c.mu.Unlock()
		close(exited)
	}()
	return nil
}

// extraFilesHook is passed to every JVM as inherited descriptors; tests set
// it to prove the JVM dies with the test binary. Nil in production.
var extraFilesHook []*os.File

// running reports whether n's JVM has been started and not yet exited.
func (n *realNode) running() bool {
	if n.exited == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
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

// signal sends sig to n's JVM if it runs and waits for it to exit, killing
// it after the stop timeout.
func (c *RealCluster) signal(n *realNode, sig syscall.Signal) error {
	c.mu.Lock()
	cmd, exited := n.cmd, n.exited
	running := n.running()
	c.mu.Unlock()
	if !running {
		return nil
	}
	_ = cmd.Process.Signal(sig)
	t := time.NewTimer(c.cfg.stopTimeout)
	defer t.Stop()
	select {
	case <-exited:
		return nil
	case <-t.C:
	}
	_ = cmd.Process.Kill()
	<-exited
	return fmt.Errorf("kafkatest: node %d did not stop within %v of %v; killed", n.info.ID, c.cfg.stopTimeout, sig)
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
