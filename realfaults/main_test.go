package realfaults

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpush/kpush/internal/faultproxy"
	"github.com/kpush/kpush/kafkatest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	closeFaultCluster()
	closeEdgeCluster()
	kafkatest.CloseShared()
	os.Exit(code)
}

// faultCluster is the 3-node cluster the fault scenarios share: one
// faultproxy per broker in front of an EXTERNAL client listener advertised
// at the proxy's address. Admin traffic, the read-back, replication and the
// KRaft quorum use the PLAINTEXT and CONTROLLER listeners, which bypass the
// proxies.
type faultCluster struct {
	c       *kafkatest.RealCluster
	proxies []*faultproxy.Proxy // by node index (= node ID)
	cl      *kgo.Client         // admin client on PLAINTEXT
	adm     *kadm.Client
}

// Broker settings the scenarios rely on, for every node of the fault
// cluster: fast fencing and ISR shrink after a kill (so a scenario does not
// wait out 9 s and 30 s defaults), brokers that close idle client
// connections after 4 s, and producer-state expiry checked every second
// (the expiry itself is set per scenario as a dynamic config).
var faultBrokerProps = [][2]string{
	{"broker.session.timeout.ms", "4000"},
	{"broker.heartbeat.interval.ms", "1000"},
	{"replica.lag.time.max.ms", "5000"},
	{"connections.max.idle.ms", "4000"},
	{"producer.id.expiration.check.interval.ms", "1000"},
	{"leader.imbalance.check.interval.seconds", "5"},
}

var (
	faultOnce sync.Once
	faultC    *faultCluster
	faultErr  error
)

// sharedFaultCluster returns the package's 3-node cluster, starting it on
// first use. Scenarios must leave it healthy (every node running).
func sharedFaultCluster(t *testing.T) *faultCluster {
	t.Helper()
	kafkatest.SkipUnlessReal(t)
	if kafkatest.Seeds() != nil {
		t.Skip("fault scenarios start their own brokers (kill, restart, proxies); run them without KPUSH_KAFKA_SEEDS: " + ownClusterCommand)
	}
	faultOnce.Do(func() { faultC, faultErr = startFaultCluster() })
	if faultErr != nil {
		t.Fatal(faultErr)
	}
	if err := faultC.healthy(t.Context()); err != nil {
		t.Fatalf("fault cluster unhealthy before %s: %v", t.Name(), err)
	}
	return faultC
}

func closeFaultCluster() {
	if faultC == nil {
		return
	}
	faultC.close()
}

func (f *faultCluster) close() {
	if f.cl != nil {
		f.cl.Close()
	}
	if f.c != nil {
		f.c.Close()
	}
	for _, p := range f.proxies {
		p.Close()
	}
}

// freePort returns a port free on 127.0.0.1 now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func startFaultCluster() (*faultCluster, error) {
	const nodes = 3
	f := &faultCluster{}
	backends := make([]int, nodes)
	for i := range nodes {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		backends[i] = port
		p, err := faultproxy.New("127.0.0.1:" + strconv.Itoa(port))
		if err != nil {
			f.close()
			return nil, err
		}
		f.proxies = append(f.proxies, p)
	}
	opts := []kafkatest.RealOption{
		kafkatest.WithNodes(nodes),
		kafkatest.WithPropertiesFunc(func(n kafkatest.NodeInfo, p map[string]string) {
			p["listeners"] += fmt.Sprintf(",EXTERNAL://127.0.0.1:%d", backends[n.ID])
			p["advertised.listeners"] += fmt.Sprintf(",EXTERNAL://%s", f.proxies[n.ID].Addr())
			p["listener.security.protocol.map"] += ",EXTERNAL:PLAINTEXT"
		}),
	}
	for _, kv := range faultBrokerProps {
		opts = append(opts, kafkatest.WithBrokerProperty(kv[0], kv[1]))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := kafkatest.NewRealCluster(ctx, opts...)
	if err != nil {
		f.close()
		return nil, err
	}
	f.c = c
	if f.cl, err = kgo.NewClient(kgo.SeedBrokers(c.Addrs()...)); err != nil {
		f.close()
		return nil, err
	}
	f.adm = kadm.NewClient(f.cl)
	return f, nil
}

// clientAddrs are the proxies' addresses: what kpush is given.
func (f *faultCluster) clientAddrs() []string {
	var a []string
	for _, p := range f.proxies {
		a = append(a, p.Addr())
	}
	return a
}

// healthy checks every node is running and listed by the brokers, and
// every proxy passes traffic.
func (f *faultCluster) healthy(ctx context.Context) error {
	for i := range f.c.Nodes() {
		if f.c.PID(i) == 0 {
			return fmt.Errorf("node %d is not running", i)
		}
		if f.proxies[i].Mode() != faultproxy.Pass {
			return fmt.Errorf("proxy %d is in mode %v", i, f.proxies[i].Mode())
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return poll(ctx, func() error {
		bm, err := f.adm.BrokerMetadata(ctx)
		if err != nil {
			return err
		}
		if len(bm.Brokers) != f.c.Nodes() {
			return fmt.Errorf("metadata lists %d brokers, want %d", len(bm.Brokers), f.c.Nodes())
		}
		return nil
	})
}

// createTopic creates a topic with the cluster's replication factor and
// the given topic configs, and waits until every partition has a leader
// and a full ISR.
func (f *faultCluster) createTopic(ctx context.Context, name string, parts int32, configs map[string]*string) error {
	resp, err := f.adm.CreateTopic(ctx, parts, -1, configs, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	return f.waitISR(ctx, name, parts, f.c.Nodes())
}

// waitISR waits until each of the topic's parts partitions has a leader and
// at least isr in-sync replicas.
func (f *faultCluster) waitISR(ctx context.Context, topic string, parts int32, isr int) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return poll(ctx, func() error {
		md, err := f.adm.Metadata(ctx, topic)
		if err != nil {
			return err
		}
		td, ok := md.Topics[topic]
		if !ok || td.Err != nil || int32(len(td.Partitions)) != parts {
			return fmt.Errorf("topic %s not ready: %v", topic, td.Err)
		}
		for _, p := range td.Partitions {
			if p.Err != nil || p.Leader < 0 || len(p.ISR) < isr {
				return fmt.Errorf("partition %d: leader %d isr %v err %v", p.Partition, p.Leader, p.ISR, p.Err)
			}
		}
		return nil
	})
}

// leaders returns each partition's leader.
func (f *faultCluster) leaders(ctx context.Context, topic string) (map[int32]int32, error) {
	md, err := f.adm.Metadata(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := map[int32]int32{}
	for _, p := range md.Topics[topic].Partitions {
		out[p.Partition] = p.Leader
	}
	return out, nil
}

// poll calls try until it succeeds or ctx ends (then it returns try's last
// error). It waits for state outside the process (a broker), which offers
// nothing to wait on.
func poll(ctx context.Context, try func() error) error {
	backoff := 50 * time.Millisecond
	for {
		err := try()
		if err == nil {
			return nil
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// ownClusterCommand is what a skip names when KPUSH_KAFKA_SEEDS is set: the
// package's tests start their own brokers, so they need the seeds unset.
const ownClusterCommand = "env -u KPUSH_KAFKA_SEEDS KPUSH_REAL_KAFKA=1 go test ./realfaults/ (or bash .ci/realkafka)"
