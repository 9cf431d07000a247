package kpush

import "strings"

// DebugPartitions describes every partition's state (tests only).
func (p *Producer) DebugPartitions() string {
	var b strings.Builder
	for _, part := range p.allPartitions() {
		b.WriteString(part.DebugString())
		b.WriteByte('\n')
	}
	return b.String()
}
