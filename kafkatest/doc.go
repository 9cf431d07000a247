// Package kafkatest runs a fake Kafka cluster inside the process, for tests,
// examples and local development. It is to Kafka what net/http/httptest is to
// HTTP: no Docker, no external broker, no environment variables.
//
// The cluster is franz-go's kfake, which speaks the real Kafka protocol on
// 127.0.0.1, so any client (kpush, franz-go, kcat) can connect to it.
//
// # Getting started
//
// In a test, NewTestCluster starts a cluster and closes it when the test ends:
//
//	c := kafkatest.NewTestCluster(t, kafkatest.WithTopic("orders", 3))
//	// ... point a producer at c.Addrs() and produce ...
//	recs, err := c.ReadAll(t.Context(), "orders")
//
// Elsewhere, NewCluster returns a started cluster and NewUnstartedCluster one
// to Start later; either way, Close it when done.
//
// # Configuration
//
// Options set the number of brokers (default 1), the ports (default random),
// the topics that exist at start (default none) and whether producing to an
// unknown topic creates it (default no, as on a production cluster).
// WithSASL requires SASL (PLAIN, SCRAM) and WithTLS encrypts the listeners
// with throwaway certificates (TLSConfig, WriteTLSFiles give clients the
// CA). WithKfakeOptions passes anything else to kfake.
// CreateTopic adds a topic to a running cluster.
//
// # Fault injection
//
// Fake returns the kfake cluster, whose ControlKey intercepts requests one at
// a time (to fail a produce, delay a response or drop a connection) and whose
// MoveTopicPartition moves a partition's leader to another broker.
//
// # Reading back
//
// ReadAll returns every record of a topic up to the high watermark at the
// time of the call, ordered by partition then offset, with keys, headers,
// timestamps and producer IDs, so a test can check exactly what was written.
//
// # Real brokers
//
// RealCluster runs Apache Kafka itself (KRaft, 1 or 3 nodes, JVMs on
// 127.0.0.1) from jars Provision fetches with Maven; NewTestRealCluster
// skips unless KPUSH_REAL_KAFKA=1 or KPUSH_KAFKA_SEEDS is set. Stop, Kill
// and Restart act on single nodes. Backend is what both clusters offer, so
// one test body can run on either. See docs/real-kafka.md.
//
// # Concurrency and shutdown
//
// A Cluster is safe for concurrent use. Close drops every client connection
// and waits for all of the cluster's goroutines to stop; if any are still
// running after 10 seconds it returns an error with their stacks, so a test
// can prove that nothing leaks.
package kafkatest
