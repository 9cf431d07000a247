package main

import (
	"errors"
	"runtime"
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

// Every completion pushed is drained by a reader that sleeps until the
// pipe is readable, reads it, then drains (as kpush/_core.py does): with
// pushers racing the drain (the wake-up byte is written after the queue's
// lock is released, so a drain may come between arming and the write), no
// wake-up is lost — a lost one leaves completions queued and the reader
// asleep.
func TestPushWakesTheReaderEveryTime(t *testing.T) {
	q, err := newQueue()
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(ep)
	if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, q.rfd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(q.rfd)}); err != nil {
		t.Fatal(err)
	}
	const pushers, each = 4, 5000
	for g := range pushers {
		go func() {
			for i := range each {
				q.push(completion{id: uint64(g*each + i)})
				if i%64 == 0 {
					runtime.Gosched()
				}
			}
		}()
	}
	got := 0
	buf := make([]byte, 4096)
	events := make([]syscall.EpollEvent, 1)
	for got < pushers*each {
		n, err := syscall.EpollWait(ep, events, 5000)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("no wake-up for 5 s with %d of %d completions drained: a wake-up was lost", got, pushers*each)
		}
		syscall.Read(q.rfd, buf)
		for {
			m := q.take(4096, 1<<16, func(int, *completion) {})
			got += m
			if m == 0 {
				break
			}
		}
	}
}

// pipeBytes reads (without blocking) every byte waiting in q's pipe.
func pipeBytes(t *testing.T, q *queue) int {
	t.Helper()
	total := 0
	buf := make([]byte, 4096)
	for {
		n, err := syscall.Read(q.rfd, buf)
		if errors.Is(err, syscall.EAGAIN) {
			return total
		}
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
}

// The pipe is written only when the queue goes from empty to non-empty: a
// thousand completions pushed with no drain between them cost one byte
// (one wake-up of the loop, one read), and after a drain empties the queue
// the next push writes one more. A write per completion would make the
// loop read the pipe once per record.
func TestPushWritesThePipeOncePerArming(t *testing.T) {
	q, err := newQueue()
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	const n = 1000
	for i := range n {
		q.push(completion{id: uint64(i)})
	}
	if got := pipeBytes(t, q); got != 1 {
		t.Fatalf("%d pushes without a drain wrote %d byte(s) to the pipe, want 1", n, got)
	}
	drained := 0
	for {
		m := q.take(4096, 1<<16, func(int, *completion) {})
		if m == 0 {
			break
		}
		drained += m
	}
	if drained != n {
		t.Fatalf("drained %d completions, want %d", drained, n)
	}
	for i := range n {
		q.push(completion{id: uint64(n + i)})
	}
	if got := pipeBytes(t, q); got != 1 {
		t.Fatalf("%d pushes after a drain wrote %d byte(s) to the pipe, want 1", n, got)
	}
}
