package main

// Goroutines and ownership (profiling): none of its own; runtime/pprof
// samples while KPUSH_ENGINE_CPUPROFILE is set, and runtime/trace records
// while KPUSH_ENGINE_TRACE is set, from library load until kp_profile_stop
// (kpush/_ffi.py calls it at interpreter exit).

// #include <stdint.h>
import "C"

import (
	"os"
	"runtime/pprof"
	"runtime/trace"
)

var profileFile, traceFile *os.File

func init() {
	if path := os.Getenv("KPUSH_ENGINE_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				profileFile = f
			} else {
				f.Close()
			}
		}
	}
	if path := os.Getenv("KPUSH_ENGINE_TRACE"); path != "" {
		if f, err := os.Create(path); err == nil {
			if trace.Start(f) == nil {
				traceFile = f
			} else {
				f.Close()
			}
		}
	}
}

// kp_profile_stop ends the CPU profile and the execution trace started by
// KPUSH_ENGINE_CPUPROFILE and KPUSH_ENGINE_TRACE.
//
//export kp_profile_stop
func kp_profile_stop() {
	writeStages()
	if profileFile != nil {
		pprof.StopCPUProfile()
		profileFile.Close()
		profileFile = nil
	}
	if traceFile != nil {
		trace.Stop()
		traceFile.Close()
		traceFile = nil
	}
}
