package main

// Input side of "kpush produce": opening and reading the inputs (on the
// reader goroutine), splitting them into records, and the JSON line format
// (read by --format json, written by --failed-out).

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/kpush/kpush"
)

// maxLineBytes is the longest record kept in memory. A longer one is
// dropped unread (it could never be sent: batch.size is smaller) and
// counted as failed. Tests lower it.
var maxLineBytes = 64 << 20

// item is one input record on its way to the producer.
type item struct {
	rec      kpush.Record
	name     string // input name: a file or "stdin"
	line     int    // record number in that input, from 1
	explicit bool   // rec.Partition was given (-p or "partition")
	bad      error  // malformed input: the record is skipped or stops the run
	tooLong  int64  // > 0: the record had this many bytes and was dropped

	offset int64  // byte offset of the record in its input
	end    int64  // byte offset just past the record and its delimiter
	raw    []byte // the record as read, for -T

	done    atomic.Bool // the producer's callback ran
	bounded bool        // sent with the first-metadata deadline
	unsent  bool        // not handed over: the run stopped first
}

func (it *item) where() string { return it.name + ":" + strconv.Itoa(it.line) }

// recordReader splits a stream into records at a delimiter.
type recordReader struct {
	r        *bufio.Reader
	delim    []byte
	max      int
	buf      []byte
	consumed int64 // bytes the last next call read, delimiter included
}

func newRecordReader(r io.Reader, delim []byte, max int) *recordReader {
	return &recordReader{r: bufio.NewReaderSize(r, 64<<10), delim: delim, max: max}
}

// next returns the next record without its delimiter, in a new slice
// (never nil). A record longer than max is dropped: next returns a nil
// record and its length. The last record need not end with the delimiter.
// At the end of the input next returns io.EOF.
func (rr *recordReader) next() (rec []byte, tooLong int64, err error) {
	d := rr.delim
	last := d[len(d)-1]
	if cap(rr.buf) > 4<<20 {
		rr.buf = nil // do not keep a huge record's buffer
	}
	rr.buf = rr.buf[:0]
	var n int64 // bytes read for this record, delimiter included
	dropping := false
	defer func() { rr.consumed = n }()
	for {
		chunk, err := rr.r.ReadSlice(last)
		n += int64(len(chunk))
		rr.buf = append(rr.buf, chunk...)
		switch {
		case err == nil && bytes.HasSuffix(rr.buf, d):
			size := n - int64(len(d))
			if dropping || size > int64(rr.max) {
				return nil, size, nil
			}
			return append(make([]byte, 0, size), rr.buf[:size]...), 0, nil
		case err == nil || errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			if n == 0 {
				return nil, 0, io.EOF
			}
			if dropping || n > int64(rr.max) {
				return nil, n, nil
			}
			return append(make([]byte, 0, n), rr.buf...), 0, nil
		default:
			return nil, 0, err
		}
		if !dropping && len(rr.buf) >= rr.max+len(d) {
			dropping = true
		}
		if dropping && len(rr.buf) >= len(d) {
			// Keep only what may start a delimiter.
			rr.buf = append(rr.buf[:0], rr.buf[len(rr.buf)-(len(d)-1):]...)
		}
	}
}

// unescape turns a flag value such as `\t` or `\r\n` into bytes. It knows
// \n \r \t \0 \\ and \xHH; other bytes stand for themselves.
func unescape(s string) ([]byte, error) {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			out = append(out, s[i])
			continue
		}
		if i+1 == len(s) {
			return nil, fmt.Errorf("%q ends with a lone backslash", s)
		}
		i++
		switch s[i] {
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case '0':
			out = append(out, 0)
		case '\\':
			out = append(out, '\\')
		case 'x':
			if i+2 >= len(s) {
				return nil, fmt.Errorf("%q: \\x needs two hex digits", s)
			}
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return nil, fmt.Errorf("%q: \\x needs two hex digits", s)
			}
			out = append(out, byte(v))
			i += 2
		default:
			return nil, fmt.Errorf("%q: unknown escape \\%c (known: \\n \\r \\t \\0 \\\\ \\xHH)", s, s[i])
		}
	}
	return out, nil
}

// jsonLine is one line of --format json as read.
type jsonLine struct {
	Key       *string         `json:"key"`
	KeyB64    *string         `json:"key_b64"`
	Value     *string         `json:"value"`
	ValueB64  *string         `json:"value_b64"`
	Headers   json.RawMessage `json:"headers"`
	Partition *int32          `json:"partition"`
	Source    json.RawMessage `json:"source"` // informational, written by --failed-out
	Error     json.RawMessage `json:"error"`  // informational, written by --failed-out
}

type jsonHeader struct {
	Key      string  `json:"key"`
	Value    *string `json:"value"`
	ValueB64 *string `json:"value_b64"`
}

// parseJSONLine parses one --format json line into r. It reports whether
// the line gave a partition (other than -1).
func parseJSONLine(line []byte, r *kpush.Record) (explicit bool, err error) {
	var jl jsonLine
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&jl); err != nil {
		return false, jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return false, errors.New("invalid JSON: more than one value on the line")
	}
	if r.Key, err = stringOrB64("key", jl.Key, jl.KeyB64); err != nil {
		return false, err
	}
	if r.Value, err = stringOrB64("value", jl.Value, jl.ValueB64); err != nil {
		return false, err
	}
	if r.Headers, err = parseJSONHeaders(jl.Headers); err != nil {
		return false, err
	}
	if jl.Partition != nil {
		if *jl.Partition < -1 {
			return false, fmt.Errorf("partition %d is negative (-1 means the partitioner)", *jl.Partition)
		}
		if *jl.Partition >= 0 {
			r.Partition = *jl.Partition
			return true, nil
		}
	}
	return false, nil
}

// jsonFields lists the fields of a --format json line, for messages.
const jsonFields = "key, key_b64, value, value_b64, headers, partition"

// jsonError says what is wrong with a --format json line in the format's
// own terms, not encoding/json's (no Go struct or field names).
func jsonError(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		want := map[string]string{"partition": "a whole number (-1 for the partitioner)", "headers": "an object or a list"}[te.Field]
		if want == "" {
			want = "a string (or null)"
		}
		if te.Field == "" {
			return fmt.Errorf("invalid JSON: the line is a %s, not an object {\"value\": ...}", te.Value)
		}
		return fmt.Errorf("invalid JSON: %q must be %s, not a %s", te.Field, want, te.Value)
	case errors.As(err, &se):
		return fmt.Errorf("invalid JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return errors.New("invalid JSON: the line ends inside the object")
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Errorf("invalid JSON: unknown field %s (known: %s)", f, jsonFields)
	}
	return fmt.Errorf("invalid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

func stringOrB64(field string, s, b64 *string) ([]byte, error) {
	switch {
	case s != nil && b64 != nil:
		return nil, fmt.Errorf("both %s and %s_b64 given", field, field)
	case s != nil:
		return append([]byte{}, *s...), nil
	case b64 != nil:
		b, err := base64.StdEncoding.DecodeString(*b64)
		if err != nil {
			return nil, fmt.Errorf("%s_b64: %w", field, err)
		}
		return b, nil
	}
	return nil, nil
}

// parseJSONHeaders parses an object {"name": "value"} (order and
// duplicates kept as written) or a list [{"key":..,"value":..}].
func parseJSONHeaders(raw json.RawMessage) ([]kpush.Header, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var hs []kpush.Header
	switch raw[0] {
	case '{':
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.Token() // '{'
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return nil, fmt.Errorf("headers: %w", err)
			}
			var v *string
			if err := dec.Decode(&v); err != nil {
				return nil, fmt.Errorf("headers: %q: value must be a string or null", tok)
			}
			h := kpush.Header{Key: tok.(string)}
			if v != nil {
				h.Value = append([]byte{}, *v...)
			}
			hs = append(hs, h)
		}
	case '[':
		var list []jsonHeader
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&list); err != nil {
			return nil, fmt.Errorf("headers: %w", err)
		}
		for _, jh := range list {
			v, err := stringOrB64("header value", jh.Value, jh.ValueB64)
			if err != nil {
				return nil, fmt.Errorf("headers: %q: %w", jh.Key, err)
			}
			hs = append(hs, kpush.Header{Key: jh.Key, Value: v})
		}
	default:
		return nil, errors.New(`headers: must be an object {"name": "value"} or a list [{"key": "name", "value": "v"}]`)
	}
	return hs, nil
}

// appendJSONLine appends r as one --format json line (with a newline):
// strings where the bytes are UTF-8, base64 otherwise; headers as a list,
// which keeps their order and duplicates. source and reason are
// informational fields, omitted when empty.
func appendJSONLine(b []byte, r *kpush.Record, explicit bool, source, reason string) []byte {
	b = append(b, '{')
	comma := false
	field := func(name string) {
		if comma {
			b = append(b, ',')
		}
		comma = true
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":`...)
	}
	bytesField := func(name string, v []byte, nullable bool) {
		switch {
		case v == nil && nullable:
			field(name)
			b = append(b, "null"...)
		case v == nil:
		case utf8.Valid(v):
			field(name)
			b = appendJSONString(b, v)
		default:
			field(name + "_b64")
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, v)
			b = append(b, '"')
		}
	}
	bytesField("key", r.Key, false)
	bytesField("value", r.Value, true)
	if len(r.Headers) > 0 {
		field("headers")
		b = append(b, '[')
		for i, h := range r.Headers {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"key":`...)
			b = appendJSONString(b, []byte(h.Key))
			b = append(b, ',')
			switch {
			case h.Value == nil:
				b = append(b, `"value":null`...)
			case utf8.Valid(h.Value):
				b = append(b, `"value":`...)
				b = appendJSONString(b, h.Value)
			default:
				b = append(b, `"value_b64":"`...)
				b = base64.StdEncoding.AppendEncode(b, h.Value)
				b = append(b, '"')
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if explicit {
		field("partition")
		b = strconv.AppendInt(b, int64(r.Partition), 10)
	}
	if source != "" {
		field("source")
		b = appendJSONString(b, []byte(source))
	}
	if reason != "" {
		field("error")
		b = appendJSONString(b, []byte(reason))
	}
	return append(b, "}\n"...)
}

// appendJSONString appends s, which must be valid UTF-8, as a JSON string
// without HTML escaping.
func appendJSONString(b, s []byte) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(string(s)) // cannot fail for a string
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})...)
}

// input is one input stream.
type input struct {
	name string
	r    io.Reader
	size int64 // -1: unknown
}

// openInputs opens the files (all of them, so a missing one fails before
// anything is sent); "-" or no file is stdin.
func openInputs(files []string, stdin io.Reader) ([]input, func(), error) {
	if len(files) == 0 {
		files = []string{"-"}
	}
	var ins []input
	var opened []*os.File
	closeAll := func() {
		for _, f := range opened {
			f.Close()
		}
	}
	for _, name := range files {
		if name == "-" {
			ins = append(ins, input{name: "stdin", r: stdin, size: -1})
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		opened = append(opened, f)
		size := int64(-1)
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			size = st.Size()
		}
		ins = append(ins, input{name: name, r: f, size: size})
	}
	return ins, closeAll, nil
}

// position is where reading stopped or resumes: a record's input, its
// line (record number, from 1) and its byte offset.
type position struct {
	name   string
	line   int
	offset int64
	index  int // of the input in the command line's list
}

func (p position) String() string { return fmt.Sprintf("%s:%d:%d", p.name, p.line, p.offset) }

// parsePosition parses --resume FILE:LINE:OFFSET; FILE is one of files
// ("stdin" or "-" for standard input; no files is stdin).
func parsePosition(s string, files []string) (*position, error) {
	rest, off, ok1 := cutLast(s)
	name, line, ok2 := cutLast(rest)
	l, err1 := strconv.Atoi(line)
	o, err2 := strconv.ParseInt(off, 10, 64)
	if !ok1 || !ok2 || err1 != nil || err2 != nil || l < 1 || o < 0 || name == "" {
		return nil, fmt.Errorf("%q is not FILE:LINE:OFFSET (as the summary prints it)", s)
	}
	if len(files) == 0 {
		files = []string{"-"}
	}
	for i, f := range files {
		if f == name || f == "-" && name == "stdin" {
			return &position{name: name, line: l, offset: o, index: i}, nil
		}
	}
	return nil, fmt.Errorf("%s is not one of the inputs (give the same files as the interrupted run)", name)
}

func cutLast(s string) (before, after string, ok bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

// seekTo positions in at offset: a seek for a file, else the bytes are
// read and discarded.
func seekTo(in input, offset int64) error {
	if sk, ok := in.r.(io.Seeker); ok && in.size >= 0 {
		if offset > in.size {
			return fmt.Errorf("--resume: %s has only %d bytes, not %d", in.name, in.size, offset)
		}
		_, err := sk.Seek(offset, io.SeekStart)
		return err
	}
	n, err := io.CopyN(io.Discard, in.r, offset)
	if n < offset {
		return fmt.Errorf("--resume: %s ended after %d bytes, before offset %d: %v", in.name, n, offset, err)
	}
	return nil
}

// readInputs reads and parses every input from start (nil: the
// beginning), sending items in batches on out. It stops early when stop is
// closed. The first item of input i+1 follows the last of input i.
func (s *sender) readInputs(ins []input, start *position, out chan<- []*item, stop <-chan struct{}) error {
	batch := make([]*item, 0, 128)
	flush := func() bool {
		if len(batch) == 0 {
			return true
		}
		select {
		case out <- batch:
			batch = make([]*item, 0, 128)
			return true
		case <-stop:
			return false
		}
	}
	for i, in := range ins {
		line, offset := 1, int64(0)
		if start != nil {
			if i < start.index {
				s.read.Add(max(in.size, 0))
				continue
			}
			if i == start.index {
				if err := seekTo(in, start.offset); err != nil {
					return err
				}
				line, offset = start.line, start.offset
				s.read.Add(offset)
			}
		}
		rr := newRecordReader(countingReader{in.r, &s.read}, s.cfg.recDelim, maxLineBytes)
		for ; ; line++ {
			data, tooLong, err := rr.next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				flush()
				return fmt.Errorf("read %s: %w", in.name, err)
			}
			it := &item{name: in.name, line: line, tooLong: tooLong, offset: offset, end: offset + rr.consumed}
			offset = it.end
			if s.cfg.tee {
				it.raw = data
			}
			if tooLong > 0 || s.parse(it, data) {
				batch = append(batch, it)
			}
			// Hand over what we have when the next read may block (a
			// terminal or pipe), so records are not held back.
			if len(batch) == cap(batch) || rr.r.Buffered() == 0 {
				if !flush() {
					return nil
				}
			}
		}
	}
	flush()
	return nil
}

// parse fills it from one input record; false means there is no record
// (a blank json line).
func (s *sender) parse(it *item, data []byte) bool {
	cfg := s.cfg
	r := &it.rec
	r.Topic = cfg.topic
	if cfg.partition >= 0 {
		r.Partition, it.explicit = cfg.partition, true
	}
	if !cfg.json {
		r.Key, r.Value, r.Headers = cfg.fixedKey, data, cfg.headers
		if cfg.keyDelim != nil {
			if k, v, ok := bytes.Cut(data, cfg.keyDelim); ok {
				r.Key, r.Value = k, v
			}
		}
		if cfg.nullEmpty && len(r.Value) == 0 {
			r.Value = nil
		}
		return true
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return false
	}
	explicit, err := parseJSONLine(data, r)
	if err != nil {
		it.bad = err
		return true
	}
	it.explicit = it.explicit || explicit
	if len(cfg.headers) > 0 {
		r.Headers = append(append([]kpush.Header{}, cfg.headers...), r.Headers...)
	}
	return true
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
