#!/usr/bin/env bash
# Runs every test once, keeps the full log, and fails when a test skipped on CI
# (tests may only skip for a declared short mode; root-only tests must run there).
#
# Two phases, so the machine is never idle on a cold run: while the pulumi CLI
# and the kubernetes provider plugin build (CPU-bound, and needed only by
# ./stacks/ and ./cmd/rack/), the other packages' tests run (they mostly wait
# on test hosts and API servers). Then ./stacks/ and ./cmd/rack/.
set -uo pipefail
cd "$(dirname "$0")/.."
cache="${CACHE_DIR:-.cache}"
log="$cache/test.log"
mkdir -p "$cache"
: >"$log"
began=$(date +%s)
stamp() { echo "== $* ($(($(date +%s) - began)) s)"; }

if [ "$(id -u)" -eq 0 ]; then
	export RACK_TEST_REQUIRE_ROOT=1
	# The test control plane (one go build), cached: about 9 minutes cold.
	stamp "test control plane (scripts/build-controlplane.sh)"
	RACK_CONTROLPLANE_DIR=$(scripts/build-controlplane.sh | tail -n 1) || { echo "building the test control plane failed"; exit 1; }
	export RACK_CONTROLPLANE_DIR
	# The container images the real-pods test rack runs (pause, rack's sample
	# web server, MetalLB, Traefik), built from Go modules and cached.
	stamp "test rack images (scripts/build-images.sh)"
	RACK_IMAGES_DIR=$(scripts/build-images.sh | tail -n 1) || { echo "building the test rack's images failed"; exit 1; }
	export RACK_IMAGES_DIR
fi

# The pulumi CLI and the kubernetes provider plugin, built once and cached
# (about 4 and 10 minutes cold), in the background.
stamp "pulumi CLI and kubernetes provider plugin (scripts/build-pulumi.sh, scripts/build-provider.sh), in the background"
(scripts/build-pulumi.sh && scripts/build-provider.sh) >"$cache/build-pulumi.log" 2>&1 &
pulumi_build=$!

# What needs them: ./stacks, and these tests of ./cmd/rack (one pattern for
# both phases, so every test runs exactly once).
pulumi_tests='^(TestApp|TestGitOps|TestRender|TestTraffic)'
early=$(go list ./... | grep -v -x -e github.com/homelab/rack/stacks -e github.com/homelab/rack/cmd/rack)
gotest() { go test -count=1 -v -timeout 50m -parallel 3 "$@"; }

stamp "go test, all but ./stacks and cmd/rack's $pulumi_tests (full log: $log)"
gotest $early >"$cache/test-early.log" 2>&1 &
early_run=$!
status=0
gotest ./cmd/rack -skip "$pulumi_tests" >"$cache/test-cli.log" 2>&1 || status=1
wait "$early_run" || status=1

if ! wait "$pulumi_build"; then
	echo "building the pulumi CLI or its kubernetes plugin failed:"
	tail -n 40 "$cache/build-pulumi.log"
	exit 1
fi
stamp "go test ./stacks and cmd/rack's $pulumi_tests"
gotest ./stacks >"$cache/test-stacks.log" 2>&1 &
stacks_run=$!
gotest ./cmd/rack -run "$pulumi_tests" >"$cache/test-late.log" 2>&1 || status=1
wait "$stacks_run" || status=1
cat "$cache/test-early.log" "$cache/test-cli.log" "$cache/test-stacks.log" "$cache/test-late.log" >"$log"
stamp "tests done"

grep -E '^(ok|FAIL|---|panic:|\?)' "$log" | grep -v -- '--- PASS' || true
if [ $status -ne 0 ]; then
	echo "== failures in detail"
	grep -B2 -A30 -E -- '--- FAIL|^panic:' "$log" | head -400
fi
skipped=$(grep -c -- '--- SKIP' "$log" || true)
if [ "${CI:-}" = "true" ] && [ "$skipped" -gt 0 ]; then
	echo "== $skipped test(s) skipped on CI, which must run them all:"
	grep -A1 -- '--- SKIP' "$log"
	status=1
fi
passed=$(grep -c -E '^\s*--- PASS' "$log" || true)
failed=$(grep -c -E '^\s*--- FAIL' "$log" || true)
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit $status
