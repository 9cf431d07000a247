// Package realfaults holds kpush's fault, security and limit tests against
// real Apache Kafka brokers (issue 12). It has no code of its own: the
// tests start a 3-node KRaft cluster (RF=3, min.insync.replicas=2) through
// kafkatest.NewRealCluster, put a faultproxy in front of each broker's
// client listener, inject faults while many goroutines send keyed records,
// then read the log back and check every outcome against a model.
//
// The tests skip unless KPUSH_REAL_KAFKA=1 (see kafkatest.EnableCommand).
// Run them with
//
//	KPUSH_REAL_KAFKA=1 go test -count=1 ./realfaults/
package realfaults
