#!/usr/bin/env bash
# Runs the robustness suite (tests/robustness) RUNS times for DURATION each,
# with a new seed per run unless SEED is given, and prints one line per run
# and a verdict. A failed run's seed replays its fault schedule. TEST picks
# the test: TestRobustness (default; network faults through proxies between
# the stores) or TestRobustnessFullPartitions (stores and PD in network
# namespaces, full partitions; needs root, iproute2 and nftables):
#
#   scripts/robustness.sh [RUNS] [DURATION]     # default 1 run of 30s
#   SEED=1234 scripts/robustness.sh 1 30s
#   TEST=TestRobustnessFullPartitions scripts/robustness.sh 5 30s
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
duration=${2:-30s}
test=${TEST:-TestRobustness}
case $test in
TestRobustness | TestRobustnessFullPartitions) ;;
*)
	echo "TEST=$test: want TestRobustness or TestRobustnessFullPartitions" >&2
	exit 2
	;;
esac
failed=0
go test -c -o /tmp/basalt-robustness.test ./tests/robustness/ || exit 1
for i in $(seq 1 "$runs"); do
	seed=${SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}
	out=$(cd tests/robustness && BASALT_ROBUSTNESS_SEED=$seed BASALT_ROBUSTNESS_DURATION=$duration \
		/tmp/basalt-robustness.test -test.run "^$test\$" -test.count=1 -test.v -test.timeout 30m 2>&1)
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
