package main

// A small getopt-style command-line parser, shared by the subcommands.
//
// It accepts what kcat users type and what Go's flag package accepts:
//
//	-K:  -tTOPIC  -b127.0.0.1:9092   short option, argument attached
//	-t TOPIC  -p -1                  short option, argument in the next word
//	-Pq                              clustered short options without arguments
//	--failed-out F  --failed-out=F   long option (GNU style)
//	-failed-out F   -failed-out=F    long option (Go flag style)
//	file -t TOPIC                    options after operands (GNU permutation)
//	--                               the rest are operands
//
// A single-dash word is a long option when the text after the dash (up to
// an '=') names a long-only option (one without a letter, such as
// -failed-out); otherwise it is a cluster of short options, as in getopt:
// -topic is -t opic, and --topic is needed for the long form.
//
// pflag was considered: it parses -K: and -tTOPIC, but it reads
// "-failed-out" as the cluster -f -a -i ..., breaking the Go-style
// single-dash long flags the CLI has always accepted, and it cannot make
// -P a no-op mode word while reporting unknown kcat letters with advice.
// A 200-line parser with a table test is simpler than bending it.

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// errBadUsage is the cause of every parse error; main prints the message
// on one line and exits with status 2.
var errBadUsage = errors.New("usage")

// usageError is a command-line error: one line naming the problem.
type usageError struct {
	cmd string // "produce", "bench", ...
	msg string
}

func (e *usageError) Error() string {
	return fmt.Sprintf("kpush %s: %s; see 'kpush %s -h'", e.cmd, e.msg, e.cmd)
}

// Is makes errors.Is(err, errUsage) true, so run exits with status 2.
func (e *usageError) Is(target error) bool { return target == errUsage || target == errBadUsage }

// option is one command-line option.
type option struct {
	short byte   // 0: none
	long  string // "": none
	arg   string // the argument's name in help; "": a boolean option
	help  string
	set   func(value string) error // value is "true"/"false" for booleans
	// hidden options are accepted but left out of the flag list
	// (documented elsewhere in the help).
	hidden bool
}

// optionSet is a command's options.
type optionSet struct {
	cmd  string
	opts []*option
	// unsupported maps kcat letters kpush does not accept to advice.
	unsupported map[byte]string
}

func (s *optionSet) add(o *option) { s.opts = append(s.opts, o) }

// str adds an option with an argument stored in *p.
func (s *optionSet) str(short byte, long, arg, help string, p *string) {
	s.add(&option{short: short, long: long, arg: arg, help: help, set: func(v string) error { *p = v; return nil }})
}

// boolean adds an option without an argument.
func (s *optionSet) boolean(short byte, long, help string, p *bool) {
	s.add(&option{short: short, long: long, help: help, set: func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*p = b
		return nil
	}})
}

// fn adds an option with an argument handed to set.
func (s *optionSet) fn(short byte, long, arg, help string, set func(string) error) {
	s.add(&option{short: short, long: long, arg: arg, help: help, set: set})
}

func (s *optionSet) byShort(c byte) *option {
	for _, o := range s.opts {
		if o.short == c && c != 0 {
			return o
		}
	}
	return nil
}

func (s *optionSet) byLong(name string) *option {
	for _, o := range s.opts {
		if o.long == name && name != "" {
			return o
		}
	}
	return nil
}

func (s *optionSet) errorf(format string, a ...any) error {
	return &usageError{cmd: s.cmd, msg: fmt.Sprintf(format, a...)}
}

// parse parses args and returns the operands. -h, -help and --help give
// errHelp.
func (s *optionSet) parse(args []string) ([]string, error) {
	var operands []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return append(operands, args[i+1:]...), nil
		case a == "-h" || a == "-help" || a == "--help":
			return nil, errHelp
		case len(a) < 2 || a[0] != '-':
			operands = append(operands, a) // "-" is stdin
			continue
		}
		next := func() (string, bool) {
			if i+1 < len(args) {
				i++
				return args[i], true
			}
			return "", false
		}
		body := strings.TrimPrefix(a[1:], "-")
		name, value, hasValue := strings.Cut(body, "=")
		if o := s.byLong(name); o != nil && (strings.HasPrefix(a, "--") || o.short == 0) {
			if err := s.setLong(o, name, value, hasValue, next); err != nil {
				return nil, err
			}
			continue
		}
		if strings.HasPrefix(a, "--") {
			return nil, s.errorf("unknown option --%s", name)
		}
		if err := s.parseShorts(a[1:], next); err != nil {
			if len(name) > 2 && strings.Trim(name, "abcdefghijklmnopqrstuvwxyz-") == "" {
				// Most likely a mistyped long option, not a cluster.
				return nil, s.errorf("unknown option -%s", name)
			}
			return nil, err
		}
	}
	return operands, nil
}

func (s *optionSet) setLong(o *option, name, value string, hasValue bool, next func() (string, bool)) error {
	if o.arg == "" {
		if !hasValue {
			value = "true"
		}
		if err := o.set(value); err != nil {
			return s.errorf("--%s: %v", name, err)
		}
		return nil
	}
	if !hasValue {
		var ok bool
		if value, ok = next(); !ok {
			return s.errorf("--%s needs an argument (%s)", name, o.arg)
		}
	}
	if err := o.set(value); err != nil {
		return s.errorf("%s: %v", o.display(), err)
	}
	return nil
}

// parseShorts parses a cluster such as "Pq" or "tTOPIC" or "K:".
func (s *optionSet) parseShorts(cluster string, next func() (string, bool)) error {
	for j := 0; j < len(cluster); j++ {
		c := cluster[j]
		o := s.byShort(c)
		if o == nil {
			if advice, ok := s.unsupported[c]; ok {
				return s.errorf("kcat's -%c is not supported: %s", c, advice)
			}
			if len(cluster) > 1 && j == 0 {
				return s.errorf("unknown option -%s", strings.SplitN(cluster, "=", 2)[0])
			}
			return s.errorf("unknown option -%c", c)
		}
		if o.arg == "" {
			if err := o.set("true"); err != nil {
				return s.errorf("-%c: %v", c, err)
			}
			continue
		}
		value := cluster[j+1:]
		if len(value) > 1 && value[0] == '=' {
			value = value[1:] // Go style -t=TOPIC; a lone -K= is kcat's "=" delimiter
		}
		if value == "" {
			var ok bool
			if value, ok = next(); !ok {
				return s.errorf("-%c needs an argument (%s)", c, o.arg)
			}
		}
		if err := o.set(value); err != nil {
			return s.errorf("-%c: %v", c, err)
		}
		return nil
	}
	return nil
}

// display names an option as the help does: -t, else --long.
func (o *option) display() string {
	if o.short != 0 {
		return "-" + string(o.short)
	}
	return "--" + o.long
}

// printOptions writes the flag list for the help.
func (s *optionSet) printOptions(w io.Writer) {
	for _, o := range s.opts {
		if o.hidden {
			continue
		}
		var names []string
		if o.short != 0 {
			names = append(names, "-"+string(o.short))
		}
		if o.long != "" {
			names = append(names, "--"+o.long)
		}
		left := strings.Join(names, ", ")
		if o.arg != "" {
			left += " " + o.arg
		}
		if len(left) > 22 {
			fmt.Fprintf(w, "  %s\n  %-22s  %s\n", left, "", o.help)
			continue
		}
		fmt.Fprintf(w, "  %-22s  %s\n", left, o.help)
	}
}
