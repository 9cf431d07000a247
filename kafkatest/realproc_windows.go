package kafkatest

import "syscall"

// jvmSysProcAttr sets nothing on Windows; Close stops the JVMs.
func jvmSysProcAttr() *syscall.SysProcAttr { return nil }
