#!/usr/bin/env bash
# Builds the pulumi CLI (github.com/pulumi/pulumi/pkg/v3, pinned in
# scripts/tools/pulumi/go.mod) into a git-ignored cache keyed by version and by
# the wrapper module's go.mod+go.sum. Cold: ~10 minutes on 2 cores; cached: instant.
# Prints the folder holding the binary on its last line (put it first on PATH).
set -euo pipefail
. "$(dirname "$0")/build-env.sh"
cd "$(dirname "$0")/tools/pulumi"
VERSION=$(awk '$1=="github.com/pulumi/pulumi/pkg/v3"{print $2}' go.mod)
key=$(cat go.mod go.sum | sha256sum | cut -c1-12)
out="${CACHE_DIR:-$(cd ../../.. && pwd)/.cache}/pulumi/${VERSION}-${key}"
mkdir -p "$out"

if [ ! -x "$out/pulumi" ]; then
	echo "== building pulumi $VERSION (slow the first time)" >&2
	# Without the version stamp the CLI reports v0.0.0 and the Automation API
	# refuses it as too old.
	ldflags="-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=${VERSION}"
	# A temporary name of its own, then an atomic rename: test packages may
	# run this script at the same time.
	tmp=$(mktemp "$out/pulumi.XXXXXX")
	trap 'rm -f "$tmp"' EXIT
	# Static, as every other Go build of make test: one flag set, so the
	# packages it shares with them (scripts/modalign) compile once.
	CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
	chmod 0755 "$tmp"
	mv -f "$tmp" "$out/pulumi"
fi
echo "$out"
