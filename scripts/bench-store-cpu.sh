#!/usr/bin/env bash
# Compares binaries of basalt by the stores' CPU per request under etcd's
# benchmark tool: one cluster (1 PD, 3 stores, 100,000 keys preloaded), its
# stores restarted on each binary in turn for ROUNDS rounds, and for each
# workload the req/s and the three stores' CPU (utime+stime from /proc) per
# 1,000 requests. The tool's own CPU, about half of a 2-core machine, does
# not blur the stores' figure as it blurs req/s.
#
#   scripts/bench-store-cpu.sh ROUNDS BINARY...
#
# FRESH=1 gives each binary, each round, a new cluster (PD, stores and the
# preload): for binaries whose data directories the others cannot open,
# such as ones that make their databases with different comparers.
# WORKLOADS, ';'-separated, replaces the three workloads (benchmark
# arguments, each ending with --total=N).
set -euo pipefail
rounds=$1; shift
bm=$(WITH_BENCHMARK=1 "$(dirname "$0")/build-etcd.sh" | awk 'NR==3')
dir=$(mktemp -d /tmp/basalt-cpu-XXXXXX)
trap 'pkill -f "data-dir $dir/" || true; sleep 2; pkill -9 -f "data-dir $dir/" || true; rm -rf "$dir"' EXIT
pd=127.0.0.1:$((23000 + RANDOM % 1000)); base=$((31000 + RANDOM % 1000))
eps=127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))
pd_start() { # start a PD on binary $1
	"$1" pd --name pd1 --data-dir "$dir/pd1" --client-addr "$pd" --peer-addr 127.0.0.1:$((base + 10)) --log-level warn >"$dir/pd.log" 2>&1 &
}
stores() { # start the three stores on binary $1
	for i in 1 2 3; do
		"$1" store --data-dir "$dir/s$i" --addr 127.0.0.1:$((base + i)) --pd "$pd" --log-level warn >"$dir/s$i.log" 2>&1 &
	done
	until "$1" ctl --pd "$pd" status 2>/dev/null | grep -q "stores: 3 up.*" && "$1" ctl --pd "$pd" status | grep -q " 0 without a leader"; do sleep 0.5; done
}
stop() { # stop the processes whose data directory starts with $dir/$1
	pkill -f "data-dir $dir/$1" || true
	while pgrep -f "data-dir $dir/$1" >/dev/null; do sleep 0.2; done
}
ticks() {
	local t=0 p
	for p in $(pgrep -f "data-dir $dir/s"); do
		read -r u s < <(cut -d' ' -f14,15 "/proc/$p/stat")
		t=$((t + u + s))
	done
	echo "$t"
}
fresh() { # a new cluster on binary $1, preloaded
	stop ""
	rm -rf "${dir:?}"/*
	pd_start "$1"
	until "$1" ctl --pd "$pd" member list >/dev/null 2>&1; do sleep 0.2; done
	stores "$1"
	"$bm" --endpoints "$eps" --conns=100 --clients=1000 put --key-size=8 --sequential-keys --key-space-size=100000 --val-size=256 --total=100000 >/dev/null 2>&1
}
workloads="range foo --consistency=s --total=300000;range foo --consistency=l --total=200000;put --key-size=8 --sequential-keys --key-space-size=100000 --val-size=256 --total=60000"
IFS=';' read -r -a workloads <<<"${WORKLOADS:-$workloads}"
[ "${FRESH:-0}" = 1 ] || fresh "$1"
hz=$(getconf CLK_TCK)
for r in $(seq "$rounds"); do
	for bin in "$@"; do
		if [ "${FRESH:-0}" = 1 ]; then
			fresh "$bin"
		else
			stop s
			stores "$bin"
		fi
		for w in "${workloads[@]}"; do
			n=${w##*--total=}
			t0=$(ticks)
			rps=$("$bm" --endpoints "$eps" --conns=100 --clients=1000 $w 2>&1 | awk '/Requests\/sec/{print $2}')
			t1=$(ticks)
			echo "round $r | $(basename "$bin") | ${w%% --*} | req/s $rps | store CPU ms per 1,000 req $(((t1 - t0) * 1000 * 1000 / hz / n))"
		done
	done
done
