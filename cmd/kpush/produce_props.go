package main

// The -X producer properties of "kpush produce" and the kpush options
// they become.

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kpush/kpush"
)

// producerProps are the -X properties.
type producerProps struct {
	acks            kpush.Acks
	batchBytes      int
	clientID        string
	compression     kpush.Compression
	idempotence     *bool
	linger          time.Duration
	deliveryTimeout time.Duration // 0: not given
	requestTimeout  time.Duration // 0: not given
	requestSet      bool          // request.timeout.ms was given (set by resolve)
	sec             securityProps
	secOpts         []kpush.Option // from sec, set by resolve
}

func defaultProps() producerProps {
	return producerProps{acks: kpush.AcksAll, batchBytes: 1 << 20, clientID: "kpush"}
}

// propNames lists the known -X properties, for the error message.
const propNames = "acks, batch.size, client.id, compression.type, enable.idempotence, linger.ms, message.timeout.ms, request.timeout.ms, " + securityPropNames

// set applies one -X property; errors name the property.
func (pp *producerProps) set(name, value string) error {
	ms := func(min int) (time.Duration, error) {
		n, err := strconv.Atoi(value)
		if err != nil || n < min || n > 1<<31-1 {
			return 0, fmt.Errorf("-X %s=%s: not a number of milliseconds from %d to 2147483647", name, value, min)
		}
		return time.Duration(n) * time.Millisecond, nil
	}
	var err error
	switch name {
	case "acks", "request.required.acks":
		switch value {
		case "all", "-1":
			pp.acks = kpush.AcksAll
		case "1":
			pp.acks = kpush.AcksLeader
		case "0":
			pp.acks = kpush.AcksNone
		default:
			return fmt.Errorf("-X acks=%s: not all, -1, 1 or 0", value)
		}
	case "batch.size":
		n, perr := strconv.Atoi(value)
		if perr != nil || n < 1024 || n > 1<<30 {
			return fmt.Errorf("-X batch.size=%s: not a number of bytes from 1024 to 1073741824", value)
		}
		pp.batchBytes = n
	case "client.id":
		pp.clientID = value
	case "compression.type", "compression.codec":
		c, cerr := kpush.ParseCompression(value)
		if cerr != nil {
			return fmt.Errorf("-X %s=%s: not none, gzip, snappy, lz4 or zstd", name, value)
		}
		pp.compression = c
	case "enable.idempotence":
		var on bool
		switch strings.ToLower(value) {
		case "true":
			on = true
		case "false":
		default:
			return fmt.Errorf("-X enable.idempotence=%s: not true or false", value)
		}
		pp.idempotence = &on
	case "linger.ms", "queue.buffering.max.ms":
		pp.linger, err = ms(0)
	case "message.timeout.ms", "delivery.timeout.ms":
		pp.deliveryTimeout, err = ms(1)
	case "request.timeout.ms":
		pp.requestTimeout, err = ms(1)
	default:
		if known, serr := pp.sec.set(name, value); known {
			return serr
		}
		return fmt.Errorf("-X %s: unknown property %q (known: %s)", name, name, propNames)
	}
	return err
}

// resolve fills in the timeouts the user left out, as the Java client
// does: the delivery timeout must cover the request timeout plus linger.
func (pp *producerProps) resolve() error {
	const def = 30 * time.Second
	pp.requestSet = pp.requestTimeout != 0
	switch {
	case pp.deliveryTimeout == 0 && pp.requestTimeout == 0:
		pp.deliveryTimeout, pp.requestTimeout = def, def-pp.linger
	case pp.deliveryTimeout == 0:
		pp.deliveryTimeout = max(def, pp.requestTimeout+pp.linger)
	case pp.requestTimeout == 0:
		pp.requestTimeout = min(def, pp.deliveryTimeout-pp.linger)
	}
	switch {
	case !pp.requestSet && pp.deliveryTimeout <= pp.linger:
		return fmt.Errorf("-X message.timeout.ms=%d must be more than -X linger.ms=%d (records wait linger.ms before they are sent)",
			pp.deliveryTimeout.Milliseconds(), pp.linger.Milliseconds())
	case pp.requestTimeout <= 0 || pp.deliveryTimeout < pp.requestTimeout+pp.linger:
		return fmt.Errorf("-X message.timeout.ms=%d must be at least -X request.timeout.ms=%d plus -X linger.ms=%d",
			pp.deliveryTimeout.Milliseconds(), pp.requestTimeout.Milliseconds(), pp.linger.Milliseconds())
	}
	if pp.idempotence != nil && *pp.idempotence && pp.acks != kpush.AcksAll {
		return fmt.Errorf("-X enable.idempotence=true needs -X acks=all (or leave acks unset); -X acks=%s was given", acksName(pp.acks))
	}
	var err error
	pp.secOpts, err = pp.sec.options()
	return err
}

// metadataWait bounds the first record's wait for the topic's metadata.
func (pp *producerProps) metadataWait() time.Duration {
	return min(10*time.Second, pp.deliveryTimeout/2)
}

func (pp *producerProps) options(brokers []string, manual bool) []kpush.Option {
	opts := []kpush.Option{
		kpush.WithBrokers(brokers...),
		kpush.WithAcks(pp.acks),
		kpush.WithMaxBatchBytes(pp.batchBytes),
		kpush.WithClientID(pp.clientID),
		kpush.WithCompression(pp.compression),
		kpush.WithLinger(pp.linger),
		kpush.WithDeliveryTimeout(pp.deliveryTimeout),
		kpush.WithRequestTimeout(pp.requestTimeout),
	}
	if pp.idempotence != nil {
		opts = append(opts, kpush.WithIdempotence(*pp.idempotence))
	}
	opts = append(opts, pp.secOpts...)
	if manual {
		opts = append(opts, kpush.WithPartitioner(kpush.ManualPartitioner))
	}
	return opts
}

// optionFlags names the flag or property behind each kpush option.
var optionFlags = map[string]string{
	"WithBrokers":         "-b",
	"WithAcks":            "-X acks",
	"WithIdempotence":     "-X enable.idempotence",
	"WithMaxBatchBytes":   "-X batch.size",
	"WithLinger":          "-X linger.ms",
	"WithDeliveryTimeout": "-X message.timeout.ms",
	"WithRequestTimeout":  "-X request.timeout.ms",
	"WithCompression":     "-X compression.type",
	"WithSASL":            "-X sasl.*",
	"WithTLS":             "-X ssl.*",
}

// xOption is the repeatable -X prop=value option; set applies one
// property. The first error is kept and returned through the pointer after
// parsing, so it can be reported after the other flags. An argument without
// '=' is named, not echoed, unless it is a known property name: it may be
// a mistyped "sasl.password:secret".
func xOption(set func(name, value string) error) (func(string) error, *error) {
	var first error
	n := 0
	return func(s string) error {
		n++
		name, value, ok := strings.Cut(s, "=")
		var err error
		switch {
		case ok:
			err = set(name, value)
		case knownProp(s):
			err = fmt.Errorf("-X %s needs a value: -X %s=VALUE", s, s)
		default:
			err = fmt.Errorf("-X argument %d is not prop=value, e.g. -X acks=all (not repeated here: it may hold a password)", n)
		}
		if err != nil && first == nil {
			first = err
		}
		return nil
	}, &first
}

// knownProp reports whether name is a -X property name.
func knownProp(name string) bool {
	for _, p := range strings.Split(propNames, ", ") {
		if p == name {
			return true
		}
	}
	return name == "request.required.acks" || name == "compression.codec" || name == "queue.buffering.max.ms" || name == "delivery.timeout.ms"
}
