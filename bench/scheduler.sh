#!/bin/sh
# Runs the scheduler's Go benchmarks (internal/scheduler/bench_test.go) and
# prints them with the machine they ran on, for BENCHMARKS.md.
#
# Usage: bench/scheduler.sh [extra go test flags, e.g. -count 5]
#        BENCHTIME=10x bench/scheduler.sh
#
# It runs the benchmarks twice: first exactly as
#   go test -run '^$' -bench . -benchtime 3x ./internal/scheduler/
# (GOMAXPROCS = all cores, so the garbage collector may use a second core),
# then with -cpu 1 (one core, the unit of the 500,000 placements/s goal).
# Each benchmark reports placements/s (wall clock) and placements/cpu-s (CPU
# time of all the process's threads, so it does not shrink when other
# processes hold the CPUs); unplaced must be 0.
set -eu

cd "$(dirname "$0")/.."

benchtime=${BENCHTIME:-3x}

echo "# scheduler benchmarks"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "nproc:   $(nproc)"
echo "cpu:     $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "memory:  $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "go:      $(go version)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"

for cpuflag in "" "-cpu 1"; do
	echo
	echo "\$ go test -run '^\$' -bench . -benchtime $benchtime $cpuflag $* ./internal/scheduler/"
	# $cpuflag is split on purpose: it is empty or two words.
	# shellcheck disable=SC2086
	go test -run '^$' -bench . -benchtime "$benchtime" $cpuflag "$@" ./internal/scheduler/
done

echo
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
