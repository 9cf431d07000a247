package main

// Goroutines and ownership (profiling): none of its own; runtime/pprof
// samples while KPUSH_ENGINE_CPUPROFILE is set, from library load until
// kp_profile_stop (kpush/_ffi.py calls it at interpreter exit).

// #include <stdint.h>
import "C"

import (
	"os"
	"runtime/pprof"
)

var profileFile *os.File

func init() {
	path := os.Getenv("KPUSH_ENGINE_CPUPROFILE")
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		return
	}
	if pprof.StartCPUProfile(f) != nil {
		f.Close()
		return
	}
	profileFile = f
}

// kp_profile_stop ends the CPU profile started by KPUSH_ENGINE_CPUPROFILE.
//
//export kp_profile_stop
func kp_profile_stop() {
	if profileFile != nil {
		pprof.StopCPUProfile()
		profileFile.Close()
		profileFile = nil
	}
}
