#!/usr/bin/env bash
# Builds the Pulumi kubernetes provider plugin, pulumi-resource-kubernetes
# (github.com/pulumi/pulumi-kubernetes/provider/v4, pinned in
# scripts/tools/provider/go.mod), into a git-ignored cache keyed by version and
# by the wrapper module's files, and installs it there into a PULUMI_HOME under
# the version rack's pulumi-kubernetes SDK asks the engine for (the sdk/v4 line
# of rack's go.mod). Cold: 15-27 minutes on 2 cores shared with other builds
# (18 CPU-minutes); with a warm Go build cache 20 seconds; cached: instant.
# Prints that PULUMI_HOME folder on its last line.
#
# The source is upstream's v4.25.0, the only provider version the module proxy
# serves here; the binary reports v4.25.0, and only its plugin folder carries
# the SDK's version (see the README on what that leaves untested).
set -euo pipefail
scripts="$(cd "$(dirname "$0")" && pwd)"
. "$scripts/build-env.sh"
root="$(dirname "$scripts")"
cd "$scripts/tools/provider"
module=github.com/pulumi/pulumi-kubernetes/provider/v4
pseudo=$(awk -v m="$module" '$1==m{print $2}' go.mod)
# The wrapper pins the SDK of the provider's own release: same version.
VERSION=$(awk '$1=="github.com/pulumi/pulumi-kubernetes/sdk/v4"{print $2}' go.mod)
# The engine loads a plugin only from a folder named for exactly this version.
want=$(awk '$1=="github.com/pulumi/pulumi-kubernetes/sdk/v4"{print $2}' "$root/go.mod")
if [ -z "$pseudo" ] || [ -z "$VERSION" ] || [ -z "$want" ]; then
	echo "build-provider.sh: cannot read the provider or sdk/v4 versions from scripts/tools/provider/go.mod and go.mod" >&2
	exit 1
fi
# As upstream's release builds it (.goreleaser.yml): static, stripped, stamped.
ldflags="-s -w -X $module/pkg/version.Version=$VERSION"
key=$( (cat go.mod go.sum tools.go && echo "$ldflags") | sha256sum | cut -c1-12)
out="${CACHE_DIR:-$root/.cache}/provider/${VERSION}-${key}"
mkdir -p "$out"

bin="$out/pulumi-resource-kubernetes"
if [ ! -x "$bin" ]; then
	echo "== building pulumi-resource-kubernetes $VERSION (slow the first time)" >&2
	# A folder of its own, then an atomic rename: test packages may run this
	# script at the same time.
	tmp=$(mktemp -d "$out/.build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	# The module zip lacks the two JSON files the plugin embeds; upstream's
	# generate.go makes them from the committed schema.json and
	# terraform-mapping.json. So: a writable copy with them added, which a
	# local replace in a copy of the wrapper module builds (the copy's own
	# `replace …/sdk/v4 => ../sdk` is ignored there: it is not the main module).
	if ! info=$(go mod download -json "$module@$pseudo"); then
		echo "build-provider.sh: cannot download $module@$pseudo (the only version the proxy serves; listing is refused):" >&2
		echo "$info" >&2
		exit 1
	fi
	src=$(echo "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	if [ ! -f "$src/cmd/pulumi-resource-kubernetes/generate.go" ]; then
		echo "build-provider.sh: $module@$pseudo has no cmd/pulumi-resource-kubernetes/generate.go (module dir: '$src')" >&2
		exit 1
	fi
	cp -R "$src" "$tmp/src"
	chmod -R u+w "$tmp/src"
	cp go.mod go.sum tools.go "$src/cmd/pulumi-resource-kubernetes/generate.go" "$tmp/"
	cd "$tmp"
	go mod edit -replace "$module=./src"
	go build -trimpath -o generate generate.go
	(cd src/cmd/pulumi-resource-kubernetes && VERSION="${VERSION#v}" ../../../generate)
	CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o plugin "$module/cmd/pulumi-resource-kubernetes"
	mv -f plugin "$bin"
	cd "$scripts/tools/provider"
	rm -rf "$tmp"
	trap - EXIT
fi

# The plugin as pulumi v3.259.0 finds it: $PULUMI_HOME/plugins/<kind>-<name>-v<version>/
# holding pulumi-<kind>-<name>, and no <folder>.partial beside it. A hard link
# spares a second copy of the binary.
home="$out/home"
plugin="$home/plugins/resource-kubernetes-$want"
if [ ! -x "$plugin/pulumi-resource-kubernetes" ]; then
	mkdir -p "$home/plugins"
	# A name the engine's plugin scan skips until the rename.
	staged=$(mktemp -d "$home/plugins/.staged.XXXXXX")
	ln "$bin" "$staged/pulumi-resource-kubernetes" 2>/dev/null || cp "$bin" "$staged/pulumi-resource-kubernetes"
	chmod 0755 "$staged"
	# Another run may have installed it meanwhile: then keep that one.
	mv -T "$staged" "$plugin" 2>/dev/null || rm -rf "$staged"
fi
if [ ! -x "$plugin/pulumi-resource-kubernetes" ]; then
	echo "build-provider.sh: could not install the plugin into $plugin" >&2
	exit 1
fi
echo "$home"
