#!/usr/bin/env bash
# Runs rack's benchmarks once and prints one line per figure:
#
#   RATIO <figure> <value>
#
# A figure is a b.ReportMetric unit named in FIGURES below. Each is a ratio
# against an anchor measured in the same run (scp, a single host, …), so it
# means the same on a fast laptop and on a loaded 2-core CI machine.
#
# To add a figure: report it from a benchmark with b.ReportMetric(x, "name"),
# add "name" to FIGURES and, if the benchmark lives in another package, the
# package to PACKAGES. Everything else go test prints goes to stderr.
#
# The benchmarks start test hosts and need root; RACK_TEST_REQUIRE_ROOT=1
# turns a skip into a failure (CI). Exits non-zero when go test fails or a
# figure is missing.
set -euo pipefail

FIGURES=(
	upload_vs_scp   # scp time / rack time for 100 MiB to one host (goal >= 0.9)
	fanout_16_vs_1  # t(16 hosts) / t(1 host) for a 50 MiB upload + a command (goal <= 1.5)
	fanout_16_vs_1_shaped # the same on links shaped like a rack's: nodes 100 Mbit/s, operator 1 Gbit/s (floor 1.6, goal <= 1.7)
	up_16_vs_1      # t(rack up on 16 hosts) / t(on 1 host) (goal <= 1.5)
	rerun_16_seconds # converged rack up re-run on 16 hosts, seconds (goal <= 3)
	rerun_16_bytes  # bytes that re-run uploads (goal 0)
	validate_200_ms # loading + validating a 200-node inventory, ms (goal < 100)
	stacks_rerun_seconds # converged rack up of the platform stacks, seconds (goal <= 10)
	up_vs_pulumi    # that run / a bare pulumi up of the same stack and state (goal <= 1.2)
	drain_vs_kubectl # rack node drain / kubectl drain of the same node with 30 pods (goal <= 1.1)
	bluegreen_flip_seconds # rack app promote until clients see only v2, seconds (goal <= 2)
	release_errors  # failed client requests over a full canary release under load (goal 0)
	rebuild_vs_up   # t(rebuild of a 3-server rack that lost every server, from an etcd snapshot) / t(rack up --nodes-only of it) (goal <= 2)
)
PACKAGES=(./inventory/ ./nodes/ ./nodes/k3s/ ./stacks/ ./cmd/rack/)

cd "$(dirname "$0")/.."
export RACK_TEST_REQUIRE_ROOT="${RACK_TEST_REQUIRE_ROOT:-}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
go test -run '^$' -bench . -benchtime 1x -timeout 90m "${PACKAGES[@]}" >"$log" 2>&1 || status=$?
cat "$log" >&2
if [ "$status" -ne 0 ]; then
	echo "bench.sh: go test failed (exit $status)" >&2
	exit "$status"
fi

# A benchmark line is "BenchmarkName-N <iterations> <value> <unit> <value> <unit> …".
missing=0
for fig in "${FIGURES[@]}"; do
	value=$(awk -v fig="$fig" '
		$1 ~ /^Benchmark/ {
			for (i = 3; i < NF; i += 2) if ($(i + 1) == fig) v = $i
		}
		END { if (v != "") print v }' "$log")
	if [ -z "$value" ]; then
		echo "bench.sh: no benchmark reported $fig (skipped?)" >&2
		missing=1
		continue
	fi
	echo "RATIO $fig $value"
done
exit "$missing"
