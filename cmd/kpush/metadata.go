package main

// "kpush metadata" (kcat -L): the cluster's brokers, topics, partitions
// and leaders, from one Metadata request sent with franz-go's client.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const metadataUsage = `Usage: kpush metadata -b BROKERS [-t TOPIC]
       kpush -L -b BROKERS [-t TOPIC]      (kcat style)

Lists the cluster's brokers, then each topic (or only -t TOPIC) with its
partitions, their leaders and replicas. Plaintext connections only: for
a secured cluster use kcat -L or kafka-topics.sh --describe. Exit
status 1 if -t TOPIC does not exist.

Examples:
  kpush metadata -b localhost:9092
  kpush -L -b localhost:9092 -t orders

Flags:
`

func runMetadata(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var brokers, topic string
	var ignored bool
	opts := &optionSet{cmd: "metadata", unsupported: kcatUnsupported}
	opts.str('b', "brokers", "BROKERS", "comma-separated seed brokers, host:port (required)", &brokers)
	opts.str('t', "topic", "TOPIC", "list only this topic", &topic)
	opts.boolean('L', "", "metadata list mode (kcat; implied)", &ignored)
	rest, err := opts.parse(args)
	if errors.Is(err, errHelp) {
		fmt.Fprint(stderr, metadataUsage)
		opts.printOptions(stderr)
		return nil
	}
	if err == nil && len(rest) > 0 {
		err = opts.errorf("unexpected argument %q", rest[0])
	}
	if err == nil && brokers == "" {
		err = opts.errorf("-b is required (e.g. -b localhost:9092)")
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.DialTimeout(5*time.Second))
	if err != nil {
		return fmt.Errorf("-b %s: %v", brokers, err)
	}
	defer cl.Close()
	req := kmsg.NewPtrMetadataRequest()
	if topic != "" {
		t := kmsg.NewMetadataRequestTopic()
		t.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, t)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(rctx, cl)
	if err != nil {
		return fmt.Errorf("metadata from %s: %v", brokers, err)
	}
	writeMetadata(stdout, resp)
	for _, t := range resp.Topics {
		if t.ErrorCode != 0 && topic != "" {
			return fmt.Errorf("topic %q: %s", topic, kerrName(t.ErrorCode))
		}
	}
	return nil
}

// writeMetadata prints a Metadata response as kcat -L does, roughly.
func writeMetadata(w io.Writer, resp *kmsg.MetadataResponse) {
	sort.Slice(resp.Brokers, func(i, j int) bool { return resp.Brokers[i].NodeID < resp.Brokers[j].NodeID })
	fmt.Fprintf(w, "%d brokers:\n", len(resp.Brokers))
	for _, b := range resp.Brokers {
		ctl := ""
		if b.NodeID == resp.ControllerID {
			ctl = " (controller)"
		}
		fmt.Fprintf(w, "  broker %d at %s:%d%s\n", b.NodeID, b.Host, b.Port, ctl)
	}
	sort.Slice(resp.Topics, func(i, j int) bool { return *resp.Topics[i].Topic < *resp.Topics[j].Topic })
	fmt.Fprintf(w, "%d topics:\n", len(resp.Topics))
	for _, t := range resp.Topics {
		name := ""
		if t.Topic != nil {
			name = *t.Topic
		}
		if t.ErrorCode != 0 {
			fmt.Fprintf(w, "  topic %q: %v\n", name, kerrName(t.ErrorCode))
			continue
		}
		fmt.Fprintf(w, "  topic %q with %d partitions:\n", name, len(t.Partitions))
		sort.Slice(t.Partitions, func(i, j int) bool { return t.Partitions[i].Partition < t.Partitions[j].Partition })
		for _, p := range t.Partitions {
			fmt.Fprintf(w, "    partition %d, leader %d, replicas: %s, isrs: %s\n", p.Partition, p.Leader, ints(p.Replicas), ints(p.ISR))
		}
	}
}

func ints(v []int32) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ",")
}

// kerrName names a broker error code, e.g. UNKNOWN_TOPIC_OR_PARTITION.
func kerrName(code int16) string {
	if err := kerr.ErrorForCode(code); err != nil {
		return err.Error()
	}
	return fmt.Sprint("error ", code)
}
