package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestSkipTags(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		rest    []byte
		wantErr bool
	}{
		{name: "no tags", in: []byte{0, 'x', 'y'}, rest: []byte("xy")},
		{name: "one tag", in: []byte{1, 5, 2, 'a', 'b', 'z'}, rest: []byte("z")},
		{name: "two tags, nothing after", in: []byte{2, 0, 1, 'a', 1, 0}, rest: []byte{}},
		{name: "multi-byte varints", in: append([]byte{1, 0x80, 0x01, 0x81, 0x01}, append(bytes.Repeat([]byte{'t'}, 129), '!')...), rest: []byte("!")},
		{name: "empty input", in: nil, wantErr: true},
		{name: "truncated count varint", in: []byte{0x80}, wantErr: true},
		{name: "count larger than tags present", in: []byte{2, 0, 0}, wantErr: true},
		{name: "missing tag id", in: []byte{1}, wantErr: true},
		{name: "missing size", in: []byte{1, 7}, wantErr: true},
		{name: "size past end", in: []byte{1, 7, 3, 'a', 'b'}, wantErr: true},
		{name: "huge size", in: []byte{1, 7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, wantErr: true},
		{name: "overflowing varint", in: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rest, err := skipTags(tt.in)
			if tt.wantErr {
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("skipTags(%x) = %x, %v; want io.ErrUnexpectedEOF", tt.in, rest, err)
				}
				return
			}
			if err != nil || !bytes.Equal(rest, tt.rest) {
				t.Fatalf("skipTags(%x) = %q, %v; want %q", tt.in, rest, err, tt.rest)
			}
		})
	}
}

func FuzzSkipTags(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte{1, 5, 2, 'a', 'b', 'z'})
	f.Add([]byte{1, 7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		rest, err := skipTags(b)
		if err != nil {
			return
		}
		if len(rest) > len(b) || !bytes.HasSuffix(b, rest) {
			t.Fatalf("skipTags(%x) = %x, not a suffix of the input", b, rest)
		}
	})
}

func frame(size int32, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(size))
	return append(b, body...)
}

func TestReadFrame(t *testing.T) {
	body := []byte{0, 0, 0, 9, 'h', 'i'}
	tests := []struct {
		name    string
		in      []byte
		want    []byte
		wantErr string // substring; "" means success
		is      error  // when set, errors.Is must hold
	}{
		{name: "valid", in: frame(6, body), want: body},
		{name: "smallest valid: correlation id only", in: frame(4, []byte{0, 0, 0, 1}), want: []byte{0, 0, 0, 1}},
		{name: "size zero", in: frame(0, nil), wantErr: "invalid response size 0"},
		{name: "size below correlation id", in: frame(3, []byte{1, 2, 3}), wantErr: "invalid response size 3"},
		{name: "negative size", in: frame(-1, nil), wantErr: "invalid response size -1"},
		{name: "size above max", in: frame(maxFrame+1, nil), wantErr: "invalid response size"},
		{name: "empty stream", in: nil, is: io.EOF},
		{name: "truncated header", in: []byte{0, 0}, is: io.ErrUnexpectedEOF},
		{name: "truncated body", in: frame(10, []byte{0, 0, 0, 1}), is: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readFrame(bufio.NewReader(bytes.NewReader(tt.in)), nil)
			switch {
			case tt.is != nil:
				if !errors.Is(err, tt.is) {
					t.Fatalf("readFrame = %x, %v; want %v", got, err, tt.is)
				}
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("readFrame = %x, %v; want error containing %q", got, err, tt.wantErr)
				}
			default:
				if err != nil || !bytes.Equal(got, tt.want) {
					t.Fatalf("readFrame = %x, %v; want %x", got, err, tt.want)
				}
			}
		})
	}
}

func TestReadFrame_ReusesBuffer(t *testing.T) {
	in := append(frame(5, []byte("abcde")), frame(4, []byte("wxyz"))...)
	br := bufio.NewReader(bytes.NewReader(in))
	buf := make([]byte, 0, 16)
	got, err := readFrame(br, buf)
	if err != nil || string(got) != "abcde" {
		t.Fatalf("first frame = %q, %v", got, err)
	}
	if &got[0] != &buf[:1][0] {
		t.Error("first frame did not reuse the provided buffer")
	}
	got, err = readFrame(br, got)
	if err != nil || string(got) != "wxyz" {
		t.Fatalf("second frame = %q, %v", got, err)
	}
}
