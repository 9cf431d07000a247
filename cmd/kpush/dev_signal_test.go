package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDev_TLSFilesRemovedOnSIGTERM: "kpush dev --tls" writes a CA and
// server and client private keys to a temporary directory; stopping it with
// SIGTERM (kill, docker stop, systemd, CI job cancel) must remove them as
// Ctrl-C does, and exit 0.
func TestDev_TLSFilesRemovedOnSIGTERM(t *testing.T) {
	bin := buildKpush(t)
	cmd := exec.Command(bin, "dev", "--tls")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	ca := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "ssl.ca.location: "); ok {
				ca <- rest
			}
		}
	}()
	var dir string
	select {
	case f := <-ca:
		dir = filepath.Dir(f)
	case <-time.After(15 * time.Second):
		t.Fatal("kpush dev --tls printed no ssl.ca.location line")
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("kpush dev after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("kpush dev still running 15s after SIGTERM")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("TLS files left in %s after SIGTERM (stat: %v)", dir, err)
	}
}
