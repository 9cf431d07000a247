package kpush

import (
	"strings"
	"time"
)

// DebugPartitions describes every partition's state (tests only).
func (p *Producer) DebugPartitions() string {
	var b strings.Builder
	for _, part := range p.allPartitions() {
		b.WriteString(part.DebugString())
		b.WriteByte('\n')
	}
	return b.String()
}

// SetTopicIdle shortens how long a topic may go unused before it is
// dropped from metadata requests (tests only).
func (p *Producer) SetTopicIdle(d time.Duration) { p.topicIdle.Store(int64(d)) }
