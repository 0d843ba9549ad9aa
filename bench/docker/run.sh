#!/usr/bin/env bash
# bench/docker/run.sh: time from command to N running replicas of one image
# on one Docker Engine, three ways, in one run:
#
#   berth   `berth deploy` of a docker-driver service (Berth's docker driver)
#   swarm   `docker service create --replicas N` in Docker Swarm mode
#   run     N × `docker run -d` in a shell loop
#   floor   N × create+start through the engine's API at once, nothing else
#           (bench/docker/floor): what the engine alone needs
#
# "Running" is the same for all three: N containers of that way in
# `docker ps --filter status=running`. The image is built locally FROM
# scratch with a static berth binary (the whoami app); every way runs it
# with PORT=8080 and no published port, so none pays for port publishing.
#
# Usage: bench/docker/run.sh [N] [ROUNDS]   (default 50 replicas, 3 rounds)
# BERTH=path and BERTH_STATIC=path use prebuilt binaries instead of building
# ./cmd/berth (the second must be static: CGO_ENABLED=0).
# Needs root, a Docker Engine that is not already a swarm node, Go.
# Cleans up its containers, image, swarm and berth data directory.
set -euo pipefail
cd "$(dirname "$0")/../.."

N=${1:-50}
ROUNDS=${2:-3}
TAG="berth-bench/whoami:$$"
WORK=$(mktemp -d /tmp/berth-bench-docker-XXXXXX)
BERTH_PID=""
SWARM=0

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

cleanup() {
	set +e
	if [ -n "$BERTH_PID" ] && kill -0 "$BERTH_PID" 2>/dev/null; then
		kill -TERM "$BERTH_PID"
		wait "$BERTH_PID" 2>/dev/null
	fi
	if [ "$SWARM" = 1 ]; then
		docker service rm bench-swarm >/dev/null 2>&1
		docker swarm leave --force >/dev/null 2>&1
	fi
	ids=$(docker ps -aq --filter label=berth-bench=run; docker ps -aq --filter label=berth-bench=floor; docker ps -aq --filter label=io.berth.service=bench-berth)
	[ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
	docker rmi -f "$TAG" >/dev/null 2>&1
	# The cgroup parent `berth up` made for its tasks (empty once they are gone).
	for d in /sys/fs/cgroup/*/"berth-bench-$$"; do
		[ -d "$d" ] && rmdir "$d" 2>/dev/null
	done
	rm -rf "$WORK"
}
trap cleanup EXIT

# running FILTER: how many containers matching the filter run.
running() { docker ps -q --filter "$1" --filter status=running | wc -l; }

# wait_running FILTER: wait (up to 300s) until N match; print the time.
wait_running() {
	local deadline=$((SECONDS + 300))
	while [ "$(running "$1")" -lt "$N" ]; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "timed out waiting for $N running ($1): $(running "$1")" >&2
			return 1
		fi
		sleep 0.05
	done
	now
}

# wait_none FILTER: wait until no container matches.
wait_none() {
	local deadline=$((SECONDS + 300))
	while [ -n "$(docker ps -aq --filter "$1")" ]; do
		[ "$SECONDS" -ge "$deadline" ] && { echo "containers ($1) did not go away" >&2; return 1; }
		sleep 0.2
	done
}

echo "==> machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "==> engine: $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})'), client $(docker version --format '{{.Client.Version}}')"
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != inactive ]; then
	echo "this engine is already in a swarm: refusing to touch it" >&2
	exit 1
fi

echo "==> building berth and the image $TAG"
mkdir -p "$WORK/ctx"
if [ -n "${BERTH:-}" ]; then # a prebuilt berth, for the host and the image
	cp "$BERTH" "$WORK/berth"
else
	go build -o "$WORK/berth" ./cmd/berth
fi
go build -o "$WORK/floor" ./bench/docker/floor
if [ -n "${BERTH_STATIC:-}" ]; then
	cp "$BERTH_STATIC" "$WORK/ctx/berth"
else
	CGO_ENABLED=0 go build -o "$WORK/ctx/berth" ./cmd/berth
fi
cat >"$WORK/ctx/Dockerfile" <<'EOF'
FROM scratch
COPY berth /berth
ENTRYPOINT ["/berth", "whoami", "--listen-addr", "0.0.0.0", "--port", "${PORT}"]
EOF
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" "$WORK/ctx" >/dev/null 2>&1

cat >"$WORK/spec.yaml" <<EOF
name: bench-berth
replicas: $N
task:
  driver: docker
  image: $TAG
  pull: never
  env: {PORT: "8080"}
restart: {condition: any}
EOF

declare -a T_BERTH T_SWARM T_RUN T_FLOOR
for round in $(seq 1 "$ROUNDS"); do
	echo "==> round $round"

	# Berth: a running `berth up`, then time deploy → N running.
	rm -rf "$WORK/data"
	"$WORK/berth" up --data-dir "$WORK/data" --listen 127.0.0.1:0 --cgroup-parent "berth-bench-$$" >"$WORK/berth.log" 2>&1 &
	BERTH_PID=$!
	deadline=$((SECONDS + 60))
	until "$WORK/berth" --data-dir "$WORK/data" node ls >/dev/null 2>&1; do
		[ "$SECONDS" -ge "$deadline" ] && { echo "berth up did not come up:"; tail "$WORK/berth.log"; exit 1; }
		sleep 0.1
	done
	t0=$(now)
	"$WORK/berth" --data-dir "$WORK/data" deploy -f "$WORK/spec.yaml" >/dev/null
	t1=$(wait_running label=io.berth.service=bench-berth)
	T_BERTH+=("$(elapsed "$t0" "$t1")")
	echo "berth: ${T_BERTH[-1]}s"
	kill -TERM "$BERTH_PID"
	wait "$BERTH_PID" || true
	BERTH_PID=""
	wait_none label=io.berth.service=bench-berth

	# Swarm: init, time service create → N running, leave.
	docker swarm init --advertise-addr 127.0.0.1 >/dev/null
	SWARM=1
	t0=$(now)
	docker service create --detach --quiet --name bench-swarm --replicas "$N" --no-resolve-image \
		--env PORT=8080 "$TAG" >/dev/null
	t1=$(wait_running label=com.docker.swarm.service.name=bench-swarm)
	T_SWARM+=("$(elapsed "$t0" "$t1")")
	echo "swarm: ${T_SWARM[-1]}s"
	docker service rm bench-swarm >/dev/null
	wait_none label=com.docker.swarm.service.name=bench-swarm
	docker swarm leave --force >/dev/null
	SWARM=0

	# docker run -d, N times in a loop.
	t0=$(now)
	for i in $(seq 1 "$N"); do
		docker run -d --label berth-bench=run --env PORT=8080 "$TAG" >/dev/null
	done
	t1=$(wait_running label=berth-bench=run)
	T_RUN+=("$(elapsed "$t0" "$t1")")
	echo "run:   ${T_RUN[-1]}s"
	docker rm -f $(docker ps -aq --filter label=berth-bench=run) >/dev/null

	# The engine alone: N create+start calls at once from one Go client.
	T_FLOOR+=("$("$WORK/floor" -image "$TAG" -n "$N" -label berth-bench=floor)")
	echo "floor: ${T_FLOOR[-1]}s"
	docker rm -f $(docker ps -aq --filter label=berth-bench=floor) >/dev/null
done

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
mb=$(median "${T_BERTH[@]}"); ms=$(median "${T_SWARM[@]}"); mr=$(median "${T_RUN[@]}"); mf=$(median "${T_FLOOR[@]}")
echo "==> medians over $ROUNDS rounds, $N replicas"
echo "berth $mb s   swarm $ms s   docker run loop $mr s   engine floor $mf s"
awk -v b="$mb" -v s="$ms" -v r="$mr" -v f="$mf" 'BEGIN { printf "berth/swarm %.2f   berth/run-loop %.2f   berth/floor %.2f   swarm/floor %.2f\n", b / s, b / r, b / f, s / f }'
echo "all rounds: berth ${T_BERTH[*]} | swarm ${T_SWARM[*]} | run ${T_RUN[*]} | floor ${T_FLOOR[*]}"
