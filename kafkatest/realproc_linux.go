package kafkatest

import "syscall"

// jvmSysProcAttr makes the kernel SIGKILL a JVM when this process dies, so
// no broker outlives its test binary, and gives it its own process group so
// a terminal's Ctrl-C reaches only us (we then stop it cleanly).
func jvmSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
