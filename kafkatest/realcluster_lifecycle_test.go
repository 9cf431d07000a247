package kafkatest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestRealCluster_BadOptions(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		opts []RealOption
		want error
	}{
		{"two nodes", []RealOption{WithNodes(2)}, ErrRealConfig},
		{"bad version", []RealOption{WithKafkaVersion("latest")}, ErrBadVersion},
		{"zero start timeout", []RealOption{WithStartTimeout(0)}, ErrRealConfig},
		{"empty property key", []RealOption{WithBrokerProperty("", "x")}, ErrRealConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewRealCluster(ctx, tc.opts...)
			if !errors.Is(err, tc.want) {
				t.Fatalf("NewRealCluster: %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := Provision(ctx, "4.x"); !errors.Is(err, ErrBadVersion) {
		t.Fatalf("Provision(4.x): %v, want ErrBadVersion", err)
	}
}

func TestSLF4JBinding(t *testing.T) {
	for _, tc := range []struct {
		name string
		jars []string
		want []string
	}{
		{"slf4j 1 and log4j2", []string{"slf4j-api-1.7.36.jar", "log4j-core-2.25.5.jar"}, []string{"org.apache.logging.log4j:log4j-slf4j-impl:2.25.5"}},
		{"slf4j 2 and log4j2", []string{"slf4j-api-2.0.17.jar", "log4j-core-2.24.3.jar"}, []string{"org.apache.logging.log4j:log4j-slf4j2-impl:2.24.3"}},
		{"no log4j (4.0)", []string{"slf4j-api-1.7.36.jar"}, []string{
			"org.apache.logging.log4j:log4j-api:" + log4jFallback,
			"org.apache.logging.log4j:log4j-core:" + log4jFallback,
			"org.apache.logging.log4j:log4j-slf4j-impl:" + log4jFallback,
		}},
		{"reload4j (3.9)", []string{"slf4j-api-1.7.36.jar", "slf4j-reload4j-1.7.36.jar"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, j := range tc.jars {
				if err := os.WriteFile(filepath.Join(dir, j), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := slf4jBinding(dir)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("slf4jBinding = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := slf4jBinding(t.TempDir()); !errors.Is(err, ErrProvision) {
		t.Fatalf("empty tree: %v, want ErrProvision", err)
	}
}

// TestRealCluster_FailedStartShowsLog occupies a node's port so its JVM
// exits at startup, and checks that the error is ErrStart with the broker
// log's explanation in it, and that nothing is left running.
func TestRealCluster_FailedStartShowsLog(t *testing.T) {
	SkipUnlessReal(t)
	if len(Seeds()) > 0 {
		t.Skip("starts its own cluster; KPUSH_KAFKA_SEEDS is set")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().(*net.TCPAddr).Port
	var pid int
	c, err := NewRealCluster(t.Context(), WithPropertiesFunc(func(n NodeInfo, p map[string]string) {
		p["listeners"] = fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", busy, n.ControllerPort)
		p["advertised.listeners"] = fmt.Sprintf("PLAINTEXT://127.0.0.1:%d", busy)
	}))
	if err == nil {
		pid = c.PID(0)
		c.Close()
		t.Fatalf("started with its port taken (pid %d)", pid)
	}
	if !errors.Is(err, ErrStart) {
		t.Fatalf("err = %v, want ErrStart", err)
	}
	if !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("error does not carry the broker log's reason:\n%v", err)
	}
}

// TestRealCluster_ThreeNodesKillRestart runs the lifecycle the fault tests
// use: kill -9 a node, produce with acks=all on the two left
// (min.insync.replicas=2), restart it, stop one cleanly, restart it, and
// read everything back.
func TestRealCluster_ThreeNodesKillRestart(t *testing.T) {
	if len(Seeds()) > 0 {
		t.Skip("needs its own 3-node cluster; KPUSH_KAFKA_SEEDS is set")
	}
	c := NewTestRealCluster(t, WithNodes(3))
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	if err := c.CreateTopic(ctx, "t", 3); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	produce := func(n int, tag string) {
		t.Helper()
		for i := range n {
			r := &kgo.Record{Topic: "t", Value: []byte(tag + strconv.Itoa(i))}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatalf("produce %s%d: %v", tag, i, err)
			}
		}
	}
	produce(10, "a")
	pid := c.PID(0)
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	if c.PID(0) != 0 || processAlive(pid) {
		t.Fatalf("node 0 (pid %d) still running after Kill", pid)
	}
	produce(10, "b")
	if err := c.Restart(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(1); err != nil {
		t.Fatal(err)
	}
	produce(10, "c")
	if err := c.Restart(ctx, 1); err != nil {
		t.Fatal(err)
	}
	recs, err := c.ReadAll(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 30 {
		t.Fatalf("read %d records, want 30", len(recs))
	}
	if _, err := c.Node(3); !errors.Is(err, ErrNoSuchNode) {
		t.Fatalf("Node(3): %v, want ErrNoSuchNode", err)
	}
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

const childEnv = "KAFKATEST_JVM_CHILD"

// TestRealCluster_JVMDiesWithTestBinary starts a test binary that starts a
// broker, kills that binary with SIGKILL (so no cleanup runs), and waits for
// the broker JVM to die too: it holds the write end of a pipe, whose read end
// sees EOF once every holder has exited.
func TestRealCluster_JVMDiesWithTestBinary(t *testing.T) {
	SkipUnlessReal(t)
	if len(Seeds()) > 0 {
		t.Skip("starts its own cluster; KPUSH_KAFKA_SEEDS is set")
	}
	if os.Getenv(childEnv) == "1" {
		t.Skip("in the child")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestRealClusterChild$", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	defer cmd.Process.Kill()

	pidc := make(chan int, 1)
	var childOut strings.Builder // written before pidc is closed
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			childOut.WriteString(sc.Text() + "\n")
			if s, ok := strings.CutPrefix(sc.Text(), "JVM DIR "); ok {
				// The child is killed before its cleanup runs.
				t.Cleanup(func() { os.RemoveAll(s) })
			}
			if s, ok := strings.CutPrefix(sc.Text(), "JVM PID "); ok {
				pid, _ := strconv.Atoi(s)
				pidc <- pid
			}
		}
		close(pidc)
	}()
	var pid int
	select {
	case p, ok := <-pidc:
		if !ok {
			t.Fatalf("child exited without starting a broker:\n%s", tail([]byte(childOut.String()), 30))
		}
		pid = p
	case <-time.After(4 * time.Minute):
		t.Fatal("child did not start a broker within 4 minutes")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	eof := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, r)
		eof <- err
	}()
	select {
	case <-eof:
	case <-time.After(30 * time.Second):
		_ = killPID(pid)
		t.Fatalf("broker JVM (pid %d) still alive 30s after its test binary was killed", pid)
	}
}

// TestRealClusterChild is the child of TestRealCluster_JVMDiesWithTestBinary.
func TestRealClusterChild(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("helper process for TestRealCluster_JVMDiesWithTestBinary")
	}
	extraFilesHook = []*os.File{os.NewFile(3, "pipe")}
	c, err := NewRealCluster(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("JVM DIR %s\nJVM PID %d\n", c.root, c.PID(0))
	select {} // killed by the parent
}

// TestNewClusterID_NeverStartsWithDash: StorageTool's argument parser reads
// a cluster ID starting with '-' as a flag ("argument --cluster-id/-t:
// expected one argument"), and 1 in 64 base64url IDs starts with one.
func TestNewClusterID_NeverStartsWithDash(t *testing.T) {
	for range 10_000 {
		id := newClusterID()
		if len(id) != 22 || strings.HasPrefix(id, "-") {
			t.Fatalf("cluster ID %q: want 22 characters, not starting with '-'", id)
		}
	}
}
