package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"time"

	"github.com/kpush/kpush/kafkatest"
)

// benchTopic is the one topic every client produces to.
const benchTopic = "bench"

// runBroker is the broker process: a kfake cluster with the spec's brokers
// and partitions on 127.0.0.1. It prints the bootstrap addresses on one
// line, then serves until stdin closes (the parent is done with it or died).
// With cpuProfile (traceFile) set it writes a CPU profile (a runtime/trace)
// of its whole life there.
func runBroker(ctx context.Context, specJSON, cpuProfile, traceFile string) error {
	var s runSpec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		return fmt.Errorf("broker: bad -spec: %w", err)
	}
	stopCPU, err := capture(cpuProfile, pprof.StartCPUProfile, pprof.StopCPUProfile)
	if err != nil {
		return err
	}
	defer stopCPU()
	stopTrace, err := capture(traceFile, trace.Start, trace.Stop)
	if err != nil {
		return err
	}
	defer stopTrace()
	c, err := kafkatest.NewCluster(kafkatest.WithBrokers(s.Brokers),
		kafkatest.WithTopic(benchTopic, int32(s.Partitions)))
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	fmt.Println(strings.Join(c.Addrs(), ","))
	stdinClosed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	select {
	case <-stdinClosed:
	case <-ctx.Done():
	}
	// kfake keeps every record in memory; exiting frees it faster than an
	// orderly Close, and nothing is left to flush.
	return nil
}

// child is a re-executed copy of this binary in one role.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
}

// startChild re-executes this binary with -role and the spec, stderr
// passed through. extra are further flags.
func startChild(role string, s runSpec, extra ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	spec, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	args := append([]string{"-role", role, "-spec", string(spec)}, extra...)
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &child{cmd: cmd, stdin: stdin, stdout: bufio.NewReader(out)}, nil
}

// readLine reads the child's next stdout line, killing the child if none
// comes within limit.
func (c *child) readLine(limit time.Duration) (string, error) {
	t := time.AfterFunc(limit, func() { c.cmd.Process.Kill() })
	defer t.Stop()
	line, err := c.stdout.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("%s: no output (%v)", c.cmd.Args[2], err)
	}
	return strings.TrimSpace(line), nil
}

// stop closes the child's stdin (its signal to exit) and waits for it,
// killing it if it lingers.
func (c *child) stop() {
	c.stdin.Close()
	t := time.AfterFunc(10*time.Second, func() { c.cmd.Process.Kill() })
	c.cmd.Wait()
	t.Stop()
}

// startBroker starts a fresh broker process for one run and returns its
// bootstrap addresses.
func startBroker(s runSpec, extra ...string) (*child, []string, error) {
	b, err := startChild("broker", s, extra...)
	if err != nil {
		return nil, nil, err
	}
	line, err := b.readLine(30 * time.Second)
	if err != nil {
		b.stop()
		return nil, nil, fmt.Errorf("broker: %w", err)
	}
	return b, strings.Split(line, ","), nil
}

// procCPU is process pid's CPU time so far (user + system, from
// /proc/PID/stat; clock ticks of 10 ms); 0 when pid is 0 or /proc cannot
// be read.
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields after its ")".
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	var ticks int64
	for _, s := range f[11:13] { // utime, stime: fields 14 and 15
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}
