// Package realtest holds kpush's tests against real Apache Kafka brokers
// (started by kafkatest.RealCluster, or named by KPUSH_KAFKA_SEEDS). It has
// no non-test code. Without KPUSH_REAL_KAFKA=1 or KPUSH_KAFKA_SEEDS every
// test skips with one line naming the command that runs them:
//
//	bash .ci/realkafka
//	KPUSH_REAL_KAFKA=1 go test ./realtest/
//	KPUSH_REAL_KAFKA=1 KPUSH_KAFKA_VERSION=3.9.2 go test ./realtest/
//
// See docs/real-kafka.md.
package realtest
