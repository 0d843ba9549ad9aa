// Package cluster holds Berth's multi-node benchmarks (issue 3): node death
// to replacements running, leader death to a new leader, and the
// scheduler's plan-and-commit rate with 1,000 registered nodes. They are Go
// benchmarks over the real berth binary in network namespaces (the
// test/cluster harness), so they run only with -bench, as root:
//
//	go test ./bench/cluster -run '^$' -bench . -benchtime 10x -timeout 30m
//
// Each benchmark reports its own metrics (seconds, placements/s); see
// BENCHMARKS.md for results. The package has no non-test code and must not
// be imported.
package cluster
