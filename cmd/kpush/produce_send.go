package main

// The sending side of "kpush produce": the producers, handing each item
// to one, the outcome callbacks, the first-metadata wait, stopping when no
// broker is reachable, and closing.
//
// Goroutines: send runs on the command's goroutine; the callbacks run on
// kpush's goroutines and touch only the tally (its mutex), the item's
// done/unsent fields and the sender's atomics; noBrokerFailure may run on
// any of them and closes abort once (abortOnce).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kpush/kpush"
)

// producer is one kpush producer of the run.
type producer struct {
	p     *kpush.Producer
	known atomic.Bool // a record got past the metadata wait
}

// sender sends items and tallies their outcomes.
type sender struct {
	cfg      *produceConfig
	tally    *tally
	metaWait time.Duration
	auto     *producer    // partitioner; nil with -p
	manual   *producer    // ManualPartitioner; created on first use
	read     atomic.Int64 // bytes read
	handed   atomic.Int64 // records handed to a producer
	watch    *watch

	abortOnce sync.Once
	abort     chan struct{} // closed when no broker is reachable and records fail
	abortErr  error         // set before abort is closed
	stopSend  func(error)   // cancels the context records are sent with
}

// knownBrokers lists the seed brokers and those the producers know.
func (s *sender) knownBrokers() []string {
	seen := map[string]bool{}
	var out []string
	add := func(b string) {
		if b != "" && !seen[b] {
			seen[b] = true
			out = append(out, b)
		}
	}
	for _, b := range s.cfg.brokers {
		add(b)
	}
	for _, pr := range []*producer{s.auto, s.manual} {
		if pr != nil {
			for _, b := range pr.p.Stats().Brokers {
				add(b.Addr)
			}
		}
	}
	return out
}

// noBrokerFailure is called when a record fails after its delivery
// timeout or for want of a broker: if the watch found every broker
// unreachable, the run stops reading (unless --keep-going), so the
// remaining records fail once, within message.timeout.ms, not in waves.
func (s *sender) noBrokerFailure(err error) {
	if s.cfg.keepGoing || !(errors.Is(err, kpush.ErrDeliveryTimeout) || errors.Is(err, kpush.ErrNoBroker)) {
		return
	}
	st := s.watch.state.Load()
	if st == nil || !st.allDown {
		return
	}
	s.abortOnce.Do(func() {
		s.abortErr = fmt.Errorf("stopped reading: no broker reachable (%s unreachable, nothing acknowledged since %s) and records fail after -X message.timeout.ms=%d; --keep-going keeps reading",
			strings.Join(st.down, ", "), st.since.Format("15:04:05"), s.cfg.props.deliveryTimeout.Milliseconds())
		close(s.abort)
		s.stopSend(errStopped) // unblocks a SendAsync waiting for buffer space
	})
}

// errMetadataWait is the cause of the first record's bounded context.
var errMetadataWait = errors.New("metadata wait over")

func newProducer(cfg *produceConfig, manual bool, stderr io.Writer) (*producer, error) {
	opts := cfg.props.options(cfg.brokers, manual)
	if cfg.metrics != nil {
		opts = append(opts, kpush.WithHooks(cfg.metrics))
	}
	p, err := kpush.New(opts...)
	var ce *kpush.ConfigError
	if errors.As(err, &ce) {
		name := optionFlags[ce.Option]
		if name == "" {
			name = ce.Option
		}
		fmt.Fprintf(stderr, "kpush produce: %s: %s\n", name, ce.Reason)
		return nil, errUsage
	}
	if err != nil {
		return nil, err
	}
	return &producer{p: p}, nil
}

// send hands one item to a producer; its outcome reaches the tally.
func (s *sender) send(ctx context.Context, it *item) {
	s.handed.Add(1)
	if it.tooLong > 0 {
		s.tally.fail(it, fmt.Errorf("line longer than %d bytes (dropped unread, not in --failed-out)", maxLineBytes))
		return
	}
	if err := s.tally.fatalErr(); err != nil {
		s.tally.fail(it, err)
		return
	}
	pr := s.auto
	if it.explicit {
		if s.manual == nil {
			var err error
			if s.manual, err = newProducer(s.cfg, true, io.Discard); err != nil {
				s.tally.fail(it, err) // cannot happen: the options are auto's
				return
			}
		}
		pr = s.manual
	}
	sctx := ctx
	if !pr.known.Load() {
		mctx, cancel := context.WithTimeoutCause(ctx, s.metaWait, errMetadataWait)
		defer cancel() // ctx is only watched until SendAsync returns
		sctx, it.bounded = mctx, true
	}
	pr.p.SendAsync(sctx, &it.rec, func(_ kpush.Result, err error) {
		it.done.Store(true)
		if err == nil {
			pr.known.Store(true)
			s.tally.ack(it)
			return
		}
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			// Never buffered (ctx is watched only until then): not
			// sent, and the resume position starts here.
			it.unsent = true
			s.handed.Add(-1)
			return
		}
		s.noBrokerFailure(err)
		switch {
		case it.bounded && errors.Is(err, context.DeadlineExceeded) && errors.Is(context.Cause(sctx), errMetadataWait):
			err = s.noMetadata()
			s.tally.setFatal(err)
		case errors.Is(err, kpush.ErrUnknownTopic), errors.Is(err, kpush.ErrTopicAuthorizationFailed),
			errors.Is(err, kpush.ErrAuthentication):
			s.tally.setFatal(err)
		}
		s.tally.fail(it, err)
	})
	if !it.done.Load() {
		pr.known.Store(true) // buffered, so the topic's metadata is known
	}
}

// noMetadata explains a first record that got no metadata in time: it
// dials the brokers to tell an unreachable broker from a silent one.
func (s *sender) noMetadata() error {
	var dialErrs []string
	for _, b := range s.cfg.brokers {
		c, err := net.DialTimeout("tcp", b, 2*time.Second)
		if err != nil {
			dialErrs = append(dialErrs, err.Error())
			continue
		}
		c.Close()
		return &kpush.ProduceError{Topic: s.cfg.topic, Partition: -1,
			Err: fmt.Errorf("no metadata for the topic within %v, though %s accepts connections", s.metaWait, b)}
	}
	return &kpush.ProduceError{Topic: s.cfg.topic, Partition: -1,
		Err: fmt.Errorf("%w within %v: %s", kpush.ErrNoBroker, s.metaWait, strings.Join(dialErrs, "; "))}
}

// close waits for every record's outcome: at most message.timeout.ms, or
// a few seconds once ctx is done (what is left then fails).
func (s *sender) close(ctx context.Context) {
	var wg sync.WaitGroup
	for _, pr := range []*producer{s.auto, s.manual} {
		if pr == nil {
			continue
		}
		wg.Go(func() {
			pr.p.Flush(ctx)
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			pr.p.Close(cctx)
		})
	}
	wg.Wait()
}
