//go:build !linux && !windows

package kafkatest

import "syscall"

// jvmSysProcAttr gives a JVM its own process group. Without Linux's
// Pdeathsig, a JVM survives its parent if the parent is killed with
// SIGKILL; Close still stops it on every normal exit.
func jvmSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
