package main

import (
	"errors"
	"syscall"
	"testing"
)

// A completion pushed after kp_free closed the pipe (a flush or
// partitions_for that finishes after close) must not write its wake-up byte
// to the closed write fd: by then the process may have reused that number
// for another file, here a new pipe.
func TestPushAfterCloseWritesToNoReusedFD(t *testing.T) {
	q, err := newQueue()
	if err != nil {
		t.Fatal(err)
	}
	oldW := q.wfd
	q.close()
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	if fds[1] != oldW {
		t.Skipf("the new pipe did not reuse fd %d (got %v); nothing to check", oldW, fds)
	}
	q.push(completion{id: 1, kind: kindFlush})
	buf := make([]byte, 8)
	n, err := syscall.Read(fds[0], buf)
	if !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("push after close wrote %d byte(s) into another file's fd %d (read err %v)", n, oldW, err)
	}
}
