package kpush

// HeldBytes sums what the producer's partitions hold outside requests in
// flight (buffered records, canceled ones not yet dropped included, and
// retry batches), for the memory-bound regression tests.
func (p *Producer) HeldBytes() int64 {
	var n int64
	for _, part := range p.allPartitions() {
		_, b := part.Held()
		n += b
	}
	return n
}
