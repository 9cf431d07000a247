package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kpush/kpush/kafkatest"
)

func TestRun_UsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"two nodes", []string{"-nodes", "2"}},
		{"bad version", []string{"-version", "newest"}},
		{"argument", []string{"extra"}},
		{"bad prop", []string{"-prop", "novalue"}},
		{"unknown flag", []string{"-bogus"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut strings.Builder
			if code := run(t.Context(), tc.args, &out, &errOut); code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, errOut.String())
			}
		})
	}
}

func TestRun_HelpHasExamples(t *testing.T) {
	var out, errOut strings.Builder
	if code := run(t.Context(), []string{"-h"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(errOut.String(), "Examples:") {
		t.Fatalf("help has no examples:\n%s", errOut.String())
	}
}

// TestRun_ServeUntilCanceled starts a real one-node cluster, connects to the
// printed bootstrap address, cancels (as Ctrl-C does) and checks that run
// returns 0 and the broker is gone.
func TestRun_ServeUntilCanceled(t *testing.T) {
	kafkatest.SkipUnlessReal(t)
	if len(kafkatest.Seeds()) > 0 {
		t.Skip("starts its own cluster; KPUSH_KAFKA_SEEDS is set")
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	var errOut strings.Builder
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, nil, pw, &errOut)
		pw.Close()
	}()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), "bootstrap: "); ok {
				addr <- s
			}
		}
		close(addr)
	}()
	var bootstrap string
	select {
	case a, ok := <-addr:
		if !ok {
			t.Fatalf("no bootstrap line; exit %d, stderr:\n%s", <-done, errOut.String())
		}
		bootstrap = a
	case <-time.After(4 * time.Minute):
		t.Fatal("no bootstrap address within 4 minutes")
	}
	conn, err := net.DialTimeout("tcp", bootstrap, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d; stderr:\n%s", code, errOut.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatal("run did not return within 90s of cancel")
	}
	if c, err := net.DialTimeout("tcp", bootstrap, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after stop", bootstrap)
	}
}
