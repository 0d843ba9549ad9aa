#!/usr/bin/env bash
# bench/update/run.sh: the zero-downtime rolling update of issue #6, under a
# steady load, for Berth (process driver, docker driver) and Docker Swarm
# mode, on this machine and this Docker Engine. For each: 4 replicas of the
# whoami app (the image is FROM scratch with the static berth binary) behind
# a published port, a health check, start-first; the load
# (bench/update/loadgen: keep-alive and new-connection workers, POST so that
# nothing is retried) runs before the update starts and until the update is
# done and at least MIN requests were sent. Printed per system: requests,
# failed requests (by kind), and the time the update took to complete.
#
# Usage: bench/update/run.sh            (MIN=100000 requests per system)
# Needs root, Go, a Docker Engine that is not already a swarm node.
# Cleans up its swarm, containers, image, berth data and processes.
set -euo pipefail
cd "$(dirname "$0")/../.."

MIN=${MIN:-100000}
KA=${KA:-2}
NC=${NC:-4}
TAG="berth-bench/update:$$"
WORK=$(mktemp -d /tmp/berth-bench-update-XXXXXX)
BERTH_PID="" LOAD_PID="" SWARM=0

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cleanup() {
	set +e
	[ -n "$LOAD_PID" ] && kill -TERM "$LOAD_PID" 2>/dev/null && wait "$LOAD_PID" 2>/dev/null
	if [ -n "$BERTH_PID" ] && kill -0 "$BERTH_PID" 2>/dev/null; then
		kill -TERM "$BERTH_PID"
		wait "$BERTH_PID" 2>/dev/null
	fi
	if [ "$SWARM" = 1 ]; then
		docker service rm bench-update >/dev/null 2>&1
		docker swarm leave --force >/dev/null 2>&1
	fi
	ids=$(docker ps -aq --filter label=io.berth.service=bench-update)
	[ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
	docker rmi -f "$TAG" >/dev/null 2>&1
	rm -rf "$WORK"
}
trap cleanup EXIT

echo "==> machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "==> engine: $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != inactive ]; then
	echo "this engine is already in a swarm: refusing to touch it" >&2
	exit 1
fi

echo "==> building berth, loadgen and the image $TAG"
mkdir -p "$WORK/ctx"
go build -o "$WORK/berth" ./cmd/berth
go build -o "$WORK/loadgen" ./bench/update/loadgen
CGO_ENABLED=0 go build -o "$WORK/ctx/berth" ./cmd/berth
cat >"$WORK/ctx/Dockerfile" <<'EOF'
FROM scratch
COPY berth /berth
HEALTHCHECK --interval=1s --timeout=1s --retries=3 CMD ["/berth", "whoami", "--help"]
ENTRYPOINT ["/berth", "whoami", "--listen-addr", "0.0.0.0"]
CMD ["--port", "8080", "--version-label", "v1"]
EOF
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" "$WORK/ctx" >/dev/null

# load_start URL [HOST]: start the load; load_stop NAME: stop it (it goes on
# to MIN requests) and print its tally.
load_start() {
	"$WORK/loadgen" -url "$1" -host "${2:-}" -keepalive "$KA" -newconn "$NC" -min "$MIN" >"$WORK/load.json" &
	LOAD_PID=$!
	sleep 2 # the load is up before the update starts (not a correctness wait)
}
load_stop() {
	kill -INT "$LOAD_PID"
	wait "$LOAD_PID"
	LOAD_PID=""
	python3 - "$1" "$2" "$WORK/load.json" <<'EOF'
import json, sys
name, took, path = sys.argv[1], sys.argv[2], sys.argv[3]
r = json.load(open(path))
kinds = "; ".join(f"{n}x {k}" for k, n in sorted(r["by_error"].items()))
print(f"RESULT {name}: {r['total']} requests, {r['failed']} failed ({r['failed']/max(r['total'],1)*1e6:.1f} per million) "
      f"in {r['seconds']:.0f}s; update took {took}s; versions {r['versions']}" + (f"; failures: {kinds}" if kinds else ""))
workers = {}
for f in r["samples"] or []:
    w = f["Worker"].split()[0]
    workers[w] = workers.get(w, 0) + 1
if workers:
    print(f"  first {len(r['samples'])} failures by worker kind: {workers}")
EOF
}

berth_spec() { # driver version port
	local cmd
	if [ "$1" = docker ]; then
		cmd="[/berth, whoami, --listen-addr, 0.0.0.0, --port, \"\${PORT_HTTP}\", --version-label, $2]"
		echo "name: bench-update
replicas: 4
task:
  driver: docker
  image: $TAG
  pull: never
  command: $cmd"
	else
		echo "name: bench-update
replicas: 4
task:
  command: [berth, whoami, --port, \"\${PORT_HTTP}\", --version-label, $2]"
	fi
	echo "  ports: [{name: http, publish: $3}]
  health:
    http: {port: http, path: /healthz}
    interval: 1s
  resources: {cpus: 0.25, memory: 64MiB}
  stop_grace_period: 5s
restart: {condition: any, delay: 1s}
routes: [{host: bench.update.test, port: http}]"
}

# run_berth DRIVER ENTRY: v1 deployed, load on ENTRY (port|route), v1 → v2
# with the default update policy and `deploy --wait`.
run_berth() {
	local driver=$1 entry=$2 port http
	port=$(freeport)
	http=$(freeport)
	berth_spec "$driver" v1 "$port" >"$WORK/v1.yaml"
	berth_spec "$driver" v2 "$port" >"$WORK/v2.yaml"
	rm -rf "$WORK/data"
	"$WORK/berth" up --data-dir "$WORK/data" --listen 127.0.0.1:0 --cgroup-parent "berth-bench-$$" \
		--mesh-http "127.0.0.1:$http" --mesh-https 127.0.0.1:0 --dns 127.0.0.1:0 >"$WORK/berth.log" 2>&1 &
	BERTH_PID=$!
	local deadline=$((SECONDS + 60))
	until "$WORK/berth" --data-dir "$WORK/data" node ls >/dev/null 2>&1; do
		[ "$SECONDS" -ge "$deadline" ] && { echo "berth up did not come up:"; tail "$WORK/berth.log"; exit 1; }
		sleep 0.1
	done
	"$WORK/berth" --data-dir "$WORK/data" deploy -f "$WORK/v1.yaml" --wait >/dev/null
	until curl -sf -o /dev/null "http://127.0.0.1:$port/" && curl -sf -o /dev/null -H 'Host: bench.update.test' "http://127.0.0.1:$http/"; do sleep 0.1; done
	if [ "$entry" = route ]; then
		load_start "http://127.0.0.1:$http/" bench.update.test
	else
		load_start "http://127.0.0.1:$port/"
	fi
	local t0 t1
	t0=$(now)
	"$WORK/berth" --data-dir "$WORK/data" deploy -f "$WORK/v2.yaml" --wait --poll-interval 100ms >/dev/null
	t1=$(now)
	load_stop "berth $driver driver, $entry" "$(elapsed "$t0" "$t1")"
	kill -TERM "$BERTH_PID"
	wait "$BERTH_PID" || true
	BERTH_PID=""
}

run_berth process port
run_berth process route
run_berth docker port
run_berth docker route

# Docker Swarm mode: the same image, 4 replicas, HEALTHCHECK, start-first.
docker swarm init --advertise-addr 127.0.0.1 >/dev/null
SWARM=1
port=$(freeport)
mode=ingress
if ! docker service create --detach --quiet --name bench-update --replicas 4 --no-resolve-image \
	--publish "published=$port,target=8080,mode=ingress" --update-order start-first \
	--update-parallelism 1 --update-monitor 5s --update-failure-action rollback "$TAG" >/dev/null 2>"$WORK/swarm.err"; then
	cat "$WORK/swarm.err"
	exit 1
fi
deadline=$((SECONDS + 60))
until curl -sf -m 2 -o /dev/null "http://127.0.0.1:$port/"; do
	if [ "$SECONDS" -ge "$deadline" ]; then
		echo "swarm ingress on port $port does not answer after 60s (no IPVS?): host mode instead"
		mode=host
		docker service rm bench-update >/dev/null
		sleep 2
		# Host mode binds the port on the node for each task: one task per
		# node, and start-first cannot start the new task beside the old.
		docker service create --detach --quiet --name bench-update --replicas 1 --no-resolve-image \
			--publish "published=$port,target=8080,mode=host" --update-order stop-first \
			--update-parallelism 1 --update-monitor 5s --update-failure-action rollback "$TAG" >/dev/null
		deadline=$((SECONDS + 60))
		until curl -sf -m 2 -o /dev/null "http://127.0.0.1:$port/"; do
			[ "$SECONDS" -ge "$deadline" ] && { echo "swarm host mode does not answer either"; exit 1; }
			sleep 0.2
		done
		break
	fi
	sleep 0.2
done
echo "==> swarm: published port in $mode mode"
load_start "http://127.0.0.1:$port/"
t0=$(now)
docker service update --quiet --args "--port 8080 --version-label v2" bench-update >/dev/null
t1=$(now)
load_stop "swarm ($mode mode)" "$(elapsed "$t0" "$t1")"
