package main

// Goroutines and ownership (embedded dev broker): kafkatest's cluster runs
// kfake's goroutines in this process; devs (guarded by dmu) maps handles
// to clusters until kp_dev_stop.

// #include <stdint.h>
import "C"

import (
	"strings"
	"sync"
	"unsafe"

	"github.com/kpush/kpush/kafkatest"
)

var (
	dmu     sync.Mutex
	devs    = map[int64]*kafkatest.Cluster{}
	nextDev int64
)

// kp_dev_start starts an in-process fake cluster (kafkatest) on 127.0.0.1
// with one topic of the given partitions, writes its comma-separated
// bootstrap addresses into buf and returns a handle > 0, or 0 with the
// error in buf. For the demo and local development only.
//
//export kp_dev_start
func kp_dev_start(topic *C.char, topicLen C.int64_t, partitions C.int32_t, buf *C.char, cap C.int64_t) C.int64_t {
	c, err := kafkatest.NewCluster(kafkatest.WithTopic(C.GoStringN(topic, C.int(topicLen)), int32(partitions)))
	if err != nil {
		writeErr(err, buf, cap)
		return 0
	}
	dst := unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(cap))
	n := copy(dst[:len(dst)-1], strings.Join(c.Addrs(), ","))
	dst[n] = 0
	dmu.Lock()
	nextDev++
	h := nextDev
	devs[h] = c
	dmu.Unlock()
	return C.int64_t(h)
}

// kp_dev_stop stops a cluster started by kp_dev_start.
//
//export kp_dev_stop
func kp_dev_stop(h C.int64_t) {
	dmu.Lock()
	c := devs[int64(h)]
	delete(devs, int64(h))
	dmu.Unlock()
	if c != nil {
		c.Close()
	}
}
