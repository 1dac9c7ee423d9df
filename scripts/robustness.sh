#!/usr/bin/env bash
# Runs the robustness suite (tests/robustness) RUNS times for DURATION each,
# with a new seed per run unless SEED is given, and prints one line per run
# and a verdict. A failed run's seed replays its fault schedule. TEST picks
# the test: TestRobustness (default; network faults through proxies between
# the stores), TestRobustnessFullPartitions (stores and PD in network
# namespaces, full partitions; needs root, iproute2 and nftables) or
# TestRobustnessInProcessCrash (PD and the stores in the test's process,
# stores crashed on pebble's in-memory file system, losing unsynced data):
#
#   scripts/robustness.sh [RUNS] [DURATION]     # default 1 run of 30s
#   SEED=1234 scripts/robustness.sh 1 30s
#   TEST=TestRobustnessFullPartitions scripts/robustness.sh 5 30s
#   TEST=TestRobustnessInProcessCrash scripts/robustness.sh 5 30s
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
duration=${2:-30s}
test=${TEST:-TestRobustness}
case $test in
TestRobustness | TestRobustnessFullPartitions | TestRobustnessInProcessCrash) ;;
*)
	echo "TEST=$test: want TestRobustness, TestRobustnessFullPartitions or TestRobustnessInProcessCrash" >&2
	exit 2
	;;
esac
failed=0
# A test binary of its own: batches from other checkouts may run beside
# this one.
bindir=$(mktemp -d "${TMPDIR:-/tmp}/basalt-robustness-bin.XXXXXX") || exit 1
trap 'rm -rf "$bindir"' EXIT
bin=$bindir/basalt-robustness.test
go test -c -o "$bin" ./tests/robustness/ || exit 1
for i in $(seq 1 "$runs"); do
	seed=${SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}
	out=$(cd tests/robustness && BASALT_ROBUSTNESS_SEED=$seed BASALT_ROBUSTNESS_DURATION=$duration \
		"$bin" -test.run "^$test\$" -test.count=1 -test.v -test.timeout 30m 2>&1)
	status=$?
	faults=$(grep -o 'faults: .*' <<<"$out" | head -1)
	ops=$(grep -o 'operations: .*' <<<"$out" | head -1)
	verdict=$(grep -oE 'linearizable: [0-9]+ operations checked|porcupine timed out.*|NOT LINEARIZABLE.*' <<<"$out" | head -1)
	watches=$(grep -oE 'watches: [0-9]+ events[^(]*' <<<"$out" | head -1)
	replay=$(grep -oE 'replay: [0-9]+ reads checked' <<<"$out" | head -1)
	dropped=$(grep -o 'frames dropped by the cuts:.*' <<<"$out" | head -1)
	if [ $status -ne 0 ]; then
		failed=$((failed + 1))
		log=${TMPDIR:-/tmp}/basalt-robustness-$seed.log
		printf '%s\n' "$out" >"$log"
		echo "run $i seed $seed FAILED (output in $log): ${verdict:-$(grep -E -- '--- FAIL|robustness_test.go|reads.go' <<<"$out" | tail -5)}"
	else
		echo "run $i seed $seed ok: $verdict; $watches; $replay; $faults${dropped:+; $dropped}; $ops"
	fi
done
echo "$runs runs of $test, $duration each: $failed failed"
[ $failed -eq 0 ]
