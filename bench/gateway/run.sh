#!/bin/sh
# Gateway benchmark: Berth's gateway beside HAProxy and nginx, with wrk, on
# three `berth whoami` backends. Installs haproxy, nginx and wrk from Debian
# if missing, builds berth and the benchmark driver, runs it, and writes
# bench/gateway/RESULTS.md. Extra arguments go to `benchgateway run`
# (e.g. -rounds 5 -duration 10s -abba 12; the defaults).
#
# Every process is started by the driver and stopped by its recorded pid;
# the temporary directory (binaries, configs, logs) is removed on exit.
set -eu

cd "$(dirname "$0")/../.."

missing=""
for tool in haproxy nginx wrk; do
	command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
	echo "installing:$missing"
	apt-get update
	# Debian's policy-rc.d keeps the packages from starting their services.
	DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy nginx wrk
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

go build -o "$tmp/berth" ./cmd/berth
go build -o "$tmp/benchgateway" ./bench/gateway
"$tmp/benchgateway" run -berth "$tmp/berth" -out bench/gateway/RESULTS.md "$@"
