package kafkatest

// One node's files and process: properties, StorageTool format, the JVM and
// its wait goroutine, signals. See realcluster.go for goroutines and locks.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

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
