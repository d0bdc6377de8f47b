#!/usr/bin/env bash
# `make test`: lint, a bounded fuzz run and every test, once, keeping the full
# log; fails when a test skipped on CI (tests may only skip for a declared
# short mode; root-only tests must run there).
#
# Scheduled so a cold 2-core machine is never idle and the longest chain
# starts first. The chains:
#   control plane -> test images -> rack's own packages -> the tests that
#   need neither pulumi nor its kubernetes plugin (mostly waiting on test
#   hosts and API servers);
#   pulumi CLI -> kubernetes provider plugin (about 27 CPU-minutes cold) ->
#   ./stacks and cmd/rack's pulumi tests, beside the first chain's tests.
# The pulumi chain starts at once, in a session of its own (see below). Builds
# that share packages run one after the other, never side by side.
# gofmt runs first (a quick failure); go vet, staticcheck and the fuzzers run
# niced beside the last tests.
set -uo pipefail
cd "$(dirname "$0")/.."
cache="${CACHE_DIR:-.cache}"
log="$cache/test.log"
mkdir -p "$cache"
: >"$log"
began=$(date +%s)
stamp() { echo "== $* ($(($(date +%s) - began)) s)"; }
status=0
# Every Go build of the tests (test binaries, the fake k3s and rack binaries
# the tests build, go vet) uses the flags the image and fake k3s builds use:
# static and path-free. Same flags, same build cache entries: each package
# compiles once instead of once per flag set.
test_build_env=(CGO_ENABLED=0 GOFLAGS=-trimpath)
# Background builds and tests must not outlive a run that stops early.
pulumi_build=
trap 'kill $(jobs -p) 2>/dev/null; [ -z "$pulumi_build" ] || kill -- -"$pulumi_build" 2>/dev/null' EXIT

stamp "gofmt"
make -s fmt || exit 1

# The pulumi CLI and the kubernetes provider plugin, built once and cached, in
# the background at low priority.
stamp "pulumi CLI and kubernetes provider plugin (scripts/build-pulumi.sh, scripts/build-provider.sh), in the background (log: $cache/build-pulumi.log)"
# Its own process group (setsid), so it can be given full priority later.
# Niced from the start: a renice of the group right after the fork races
# with the child's setsid. Where the kernel groups processes by session for
# scheduling (autogroup, on here), setsid also gives the chain an equal share
# of the CPU beside the control plane whatever its nice value (measured: over
# half of it): two lanes, each about one core, which suits them (they share
# few packages, so neither waits on the other's compiling).
nice -n 10 setsid bash -c 'scripts/build-pulumi.sh && scripts/build-provider.sh' >"$cache/build-pulumi.log" 2>&1 &
pulumi_build=$!

if [ "$(id -u)" -eq 0 ]; then
	export RACK_TEST_REQUIRE_ROOT=1
	# The images' modules download while the control plane compiles.
	(nice -n 10 scripts/build-images.sh download >"$cache/download-images.log" 2>&1 || true) &
	stamp "test control plane (scripts/build-controlplane.sh)"
	RACK_CONTROLPLANE_DIR=$(scripts/build-controlplane.sh | tail -n 1) || { echo "building the test control plane failed"; exit 1; }
	export RACK_CONTROLPLANE_DIR
	# The container images the real-pods test rack runs (pause, rack's sample
	# web server, MetalLB, Traefik), built from Go modules and cached.
	stamp "test rack images (scripts/build-images.sh)"
	RACK_IMAGES_DIR=$(scripts/build-images.sh | tail -n 1) || { echo "building the test rack's images failed"; exit 1; }
	export RACK_IMAGES_DIR
fi

# rack's own packages and their dependencies (the Kubernetes client
# libraries, the pulumi SDK), compiled once, in one process: the `go test`
# runs below would otherwise compile the same packages side by side, twice.
# After the control plane, whose Kubernetes libraries they share (same
# versions): two builds compiling a package at the same time both compile it
# (measured cold: begun beside the control plane, this build took 25
# CPU-minutes and had not finished when the control plane and MetalLB had).
# The pulumi CLI, whose SDK they share too, is built long before. Collected
# as the tool builds are (scripts/build-env.sh); the tests keep Go's default.
# A failed build shows again, with its test, below.
stamp "rack's packages (go build ./..., log: $cache/build-rack.log)"
(. scripts/build-env.sh && env "${test_build_env[@]}" go build ./... >"$cache/build-rack.log" 2>&1) || true

export "${test_build_env[@]}"

# What needs pulumi: ./stacks, and these tests of ./cmd/rack (one pattern for
# both phases, so every test runs exactly once). They run in two processes:
# the traffic tests on their two real-pods racks (the longest chain of all),
# the others on labs of their own beside them.
traffic_tests='^TestTraffic'
app_tests='^(TestApp|TestGitOps|TestRender)'
pulumi_tests="$traffic_tests|$app_tests"
# The slowest packages first: go test starts packages in the order given,
# two at a time (-p follows the cores), and nodes/k3s alone runs its labs for
# minutes; listed last (go list's order) it began when the others were done.
slow=(github.com/homelab/rack/nodes/k3s github.com/homelab/rack/apps github.com/homelab/rack/internal/fakek3s
	github.com/homelab/rack/internal/noderuntime github.com/homelab/rack/nodes github.com/homelab/rack/apps/release)
early=$(printf '%s\n' "${slow[@]}"; go list ./... | grep -v -x -e github.com/homelab/rack/stacks -e github.com/homelab/rack/cmd/rack "${slow[@]/#/-e}")
gotest() { go test -count=1 -v -timeout 50m -parallel 3 "$@"; }
# run NAME LOG ARGS... runs gotest ARGS in the background into LOG and says
# when it ends; $! is its pid.
run() {
	local name=$1 out=$2
	shift 2
	{
		gotest "$@" >"$out" 2>&1
		rc=$?
		stamp "$name done (exit $rc)"
		exit $rc
	} &
}

# The tests mostly wait: from now on the pulumi chain is the longest one,
# and shares the CPU equally with the test builds (root may raise priority
# back; elsewhere it stays niced).
renice -n 0 -g "$pulumi_build" >/dev/null 2>&1 || true
stamp "go test, all but ./stacks and cmd/rack's $pulumi_tests (full log: $log)"
# shellcheck disable=SC2086 # one argument per package
run "the tests without pulumi" "$cache/test-early.log" $early
early_run=$!
run "cmd/rack's tests without pulumi" "$cache/test-cli.log" ./cmd/rack -skip "$pulumi_tests"
cli_run=$!

# The tests that need pulumi start as soon as it is there, beside the others:
# all of them mostly wait (on test hosts, API servers and pods), so running
# them side by side takes about as long as the longest (the traffic tests),
# not the sum.
stamp "waiting for the pulumi CLI and its kubernetes plugin"
if ! wait "$pulumi_build"; then
	echo "building the pulumi CLI or its kubernetes plugin failed:"
	tail -n 40 "$cache/build-pulumi.log"
	exit 1
fi
stamp "pulumi CLI and kubernetes provider plugin built"
stamp "go test ./stacks and cmd/rack's $pulumi_tests; go vet, staticcheck and the fuzzers beside them (log: $cache/lint.log)"
nice -n 10 make -s vet fuzz >"$cache/lint.log" 2>&1 &
lint_run=$!
# ./stacks' tests run one at a time (they set PATH and PULUMI_HOME for the
# engine), so the longest, alone a third of them, gets a process of its own.
stacks_apart='^TestAppsStackForReal$'
run "./stacks' $stacks_apart" "$cache/test-stacks-apps.log" ./stacks -run "$stacks_apart"
stacks_apps_run=$!
run "./stacks' others" "$cache/test-stacks.log" ./stacks -skip "$stacks_apart"
stacks_run=$!
run "cmd/rack's $traffic_tests" "$cache/test-traffic.log" ./cmd/rack -run "$traffic_tests"
traffic_run=$!
run "cmd/rack's $app_tests" "$cache/test-apps.log" ./cmd/rack -run "$app_tests"
apps_run=$!
for pid in "$early_run" "$cli_run" "$stacks_apps_run" "$stacks_run" "$traffic_run" "$apps_run"; do
	wait "$pid" || status=1
done
cat "$cache/test-early.log" "$cache/test-cli.log" "$cache/test-stacks-apps.log" "$cache/test-stacks.log" "$cache/test-traffic.log" "$cache/test-apps.log" >"$log"
stamp "tests done"
if ! wait "$lint_run"; then
	echo "== go vet, staticcheck or a fuzzer failed:"
	tail -n 60 "$cache/lint.log"
	status=1
fi
stamp "lint and fuzz done"
echo "== CPU time (user, system) of this shell, then of everything it ran:"
times

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
