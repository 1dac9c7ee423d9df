#!/usr/bin/env bash
# Measures what forwarding a write to its region's leader costs, on a
# cluster kept at one region (1 PD, 3 stores, load splits off), a fresh one
# for each binary in each round, alternating binaries:
#
#   scripts/bench-forward.sh ROUNDS BINARY...
#
# MODE=throughput (default): etcd's benchmark put with 1,000 clients aimed
#   at a store that leads nothing, so every put is forwarded: req/s, and
#   that store's and the leader's CPU (utime+stime from /proc) per 1,000
#   puts.
# MODE=latency: one client over all three stores (two puts in three
#   forwarded): req/s, p50 and p99.
set -euo pipefail
rounds=$1; shift
mode=${MODE:-throughput}
bm=$(WITH_BENCHMARK=1 "$(dirname "$0")/build-etcd.sh" | awk 'NR==3')
dir=$(mktemp -d /tmp/basalt-fwd-XXXXXX)
trap 'pkill -f "data-dir $dir/" || true; sleep 2; pkill -9 -f "data-dir $dir/" || true; rm -rf "$dir"' EXIT
pd=127.0.0.1:$((23000 + RANDOM % 1000)); base=$((31000 + RANDOM % 1000))
eps=127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))
put="put --key-size=8 --sequential-keys --key-space-size=100000 --val-size=256"
hz=$(getconf CLK_TCK)
ticks() { # CPU ticks of the store listening on $1
	local i=$((${1##*:} - base)) u s
	read -r u s < <(cut -d' ' -f14,15 "/proc/$(pgrep -f "data-dir $dir/s$i ")/stat")
	echo $((u + s))
}
cluster() { # a fresh one-region cluster on binary $1, replicated and warmed
	pkill -f "data-dir $dir/" || true
	while pgrep -f "data-dir $dir/" >/dev/null; do sleep 0.2; done
	rm -rf "${dir:?}"/*
	"$1" pd --name pd1 --data-dir "$dir/pd1" --client-addr "$pd" --peer-addr 127.0.0.1:$((base + 10)) --log-level warn >"$dir/pd.log" 2>&1 &
	until "$1" ctl --pd "$pd" member list >/dev/null 2>&1; do sleep 0.2; done
	for i in 1 2 3; do
		"$1" store --data-dir "$dir/s$i" --addr 127.0.0.1:$((base + i)) --pd "$pd" --log-level warn --split-qps-threshold 0 >"$dir/s$i.log" 2>&1 &
	done
	until "$1" ctl --pd "$pd" status 2>/dev/null | grep -q " 0 under-replicated" && "$1" ctl --pd "$pd" status | grep -q " 0 without a leader"; do sleep 0.5; done
	"$bm" --endpoints "$eps" --conns=100 --clients=1000 $put --total=20000 >/dev/null 2>&1
}
for r in $(seq "$rounds"); do
	for bin in "$@"; do
		cluster "$bin"
		if [ "$mode" = latency ]; then
			out=$("$bm" --endpoints "$eps" --conns=1 --clients=1 $put --total=3000 2>&1)
			echo "round $r | $(basename "$bin") | $(echo "$out" | awk '/Requests\/sec/{printf "req/s %s ", $2} /50% in/{printf "p50 %s s ", $3} /99% in/{printf "p99 %s s", $3}')"
			continue
		fi
		st=$("$bin" ctl --pd "$pd" status)
		leader=$(echo "$st" | awk '/Up regions 1 leaders 1/{print $3}')
		front=$(echo "$st" | awk '/Up regions 1 leaders 0/{print $3}' | head -1)
		n=60000
		f0=$(ticks "$front"); l0=$(ticks "$leader")
		rps=$("$bm" --endpoints "$front" --conns=100 --clients=1000 $put --total=$n 2>&1 | awk '/Requests\/sec/{print $2}')
		f1=$(ticks "$front"); l1=$(ticks "$leader")
		echo "round $r | $(basename "$bin") | req/s $rps | CPU ms per 1,000 puts: forwarding store $(((f1 - f0) * 1000 * 1000 / hz / n)), leader $(((l1 - l0) * 1000 * 1000 / hz / n))"
	done
done
