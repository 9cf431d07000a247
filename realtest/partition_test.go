package realtest

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kpush/kpush"
	"github.com/kpush/kpush/kafkatest"
)

// TestPartition_MatchesJavaProducer produces the same keys with kpush and
// with the Java producer (the broker's own ConsoleProducer, parse.key=true)
// into two topics of 7 partitions, and checks that every key landed on the
// same partition: kpush's murmur2 partitioner is Java's.
func TestPartition_MatchesJavaProducer(t *testing.T) {
	const keys, partitions = 500, 7
	c := cluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	version := c.Version()
	if version == "" {
		version = kafkatest.KafkaVersion() // external cluster: any client version will do
	}
	in, err := kafkatest.Provision(ctx, version)
	if err != nil {
		t.Fatal(err)
	}
	kpushTopic, javaTopic := newTopic(t, c, partitions), newTopic(t, c, partitions)

	p := newProducer(t, c)
	want := map[string]int32{}
	var input strings.Builder
	for i := range keys {
		k := fmt.Sprintf("key-%d-%x", i, i*7919)
		res, err := p.Send(ctx, &kpush.Record{Topic: kpushTopic, Key: []byte(k), Value: []byte(k)})
		if err != nil {
			t.Fatal(err)
		}
		want[k] = res.Partition
		fmt.Fprintf(&input, "%s\t%s\n", k, k)
	}

	class := "org.apache.kafka.tools.ConsoleProducer"
	if strings.HasPrefix(version, "3.") {
		class = "kafka.tools.ConsoleProducer"
	}
	cmd := exec.CommandContext(ctx, "java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-cp", in.Classpath(), class,
		"--bootstrap-server", strings.Join(c.Addrs(), ","), "--topic", javaTopic,
		"--property", "parse.key=true", "--property", "key.separator=\t",
		"--producer-property", "acks=all")
	cmd.Stdin = strings.NewReader(input.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ConsoleProducer: %v\n%s", err, out)
	}

	got := readAll(t, c, javaTopic)
	if len(got) != keys {
		t.Fatalf("Java producer wrote %d records, want %d", len(got), keys)
	}
	diff := 0
	for _, r := range got {
		if w, ok := want[string(r.Key)]; !ok || w != r.Partition {
			diff++
			if diff <= 5 {
				t.Errorf("key %q: Java chose partition %d, kpush %d", r.Key, r.Partition, w)
			}
		}
	}
	if diff > 0 {
		t.Fatalf("%d of %d keys on different partitions", diff, keys)
	}
}
