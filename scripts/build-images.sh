#!/usr/bin/env bash
# Builds the test rack's container images from Go modules (nothing is pulled):
# registry.k8s.io/pause:3.6 and docker.io/homelab/sampleweb:v1..v3 from rack's own
# source, quay.io/metallb/{controller,speaker} (MetalLB v0.16.1, also tagged v0.16.2 for
# the 0.16.2 chart: see scripts/tools/images/metallb/go.mod) and
# docker.io/library/traefik:v3.6.15 (without lego's DNS-01 providers: see below) from the wrapper
# modules in scripts/tools/images/. One `go build` per module; each
# output is cached under ${CACHE_DIR:-.cache}/images/<name>-<version>-<key>, the key
# hashing the module files and the Go version, so reruns cost a hash.
# Prints the folder of the image set (OCI tars + images.json) on its last line.
#
#   build-images.sh download
# only downloads the modules the builds need (network-bound: make test runs it
# while the control plane compiles; Traefik's alone take over a minute).
set -euo pipefail
mode=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/build-env.sh"
cache="${CACHE_DIR:-$root/.cache}/images"
mkdir -p "$cache"
gover=$(go env GOVERSION)
export CGO_ENABLED=0

# key FILE... hashes the files (by name and content) and the Go version.
key() {
	{
		echo "$gover"
		for f in "$@"; do
			echo "== ${f#"$root"/}"
			cat "$f"
		done
	} | sha256sum | cut -c1-12
}

# build NAME VERSION KEY DIR LDFLAGS PKG... builds PKGs (in module DIR) into
# $cache/NAME-VERSION-KEY, through a private folder renamed into place so a
# half-built folder is never seen. Sets $out.
build() {
	local name=$1 version=$2 k=$3 dir=$4 ldflags=$5
	shift 5
	out="$cache/$name-$version-$k"
	if [ -f "$out/.done" ]; then
		touch "$out" # in use: pruning keeps it
		return 0
	fi
	if [ "$mode" = download ]; then
		(cd "$dir" && go list -deps "$@" >/dev/null)
		return 0
	fi
	echo "== building $name $version ($*)" >&2
	local started=$SECONDS tmp
	tmp=$(mktemp -d "$cache/.build-$name.XXXXXX")
	chmod 755 "$tmp"
	if ! (cd "$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp/" "$@"); then
		rm -rf "$tmp"
		return 1
	fi
	touch "$tmp/.done"
	rm -rf "$out"
	mv "$tmp" "$out"
	echo "== built $name $version in $((SECONDS - started)) s" >&2
}

modver() { awk -v m="$1" '$1==m{print $2} $1=="require" && $2==m{print $3}' "$2"; }

# Leftovers of builds killed half-way (a young one may be another run's).
find "$cache" -maxdepth 1 -name '.build-*' -mmin +180 -exec rm -rf {} +

# rack's own: pause, sampleweb and the image writer.
own=("$root/go.mod" "$root/go.sum")
while IFS= read -r f; do own+=("$f"); done < <(find "$root/internal/images" "$root/internal/sampleweb" "$root/internal/srcroot" -name '*.go' ! -name '*_test.go' | sort)
build rack dev "$(key "${own[@]}")" "$root" "" \
	./internal/images/cmd/pause ./internal/sampleweb ./internal/images/cmd/mkimages
rackdir=$out

m="$root/scripts/tools/images/metallb"
v=$(modver go.universe.tf/metallb "$m/go.mod")
build metallb "$v" "$(key "$m/go.mod" "$m/go.sum" "$m/tools.go")" "$m" \
	"-X go.universe.tf/metallb/internal/version.gitCommit=$v -X go.universe.tf/metallb/internal/version.gitBranch=$v" \
	go.universe.tf/metallb/controller go.universe.tf/metallb/speaker
metallbdir=$out

t="$root/scripts/tools/images/traefik"
v=$(modver github.com/traefik/traefik/v3 "$t/go.mod")
stub="$t/_legodns/zz_gen_dns_providers.go"
# Some of Traefik's DNS-provider modules (github.com/nrdcg/*) are not in the checksum
# database; go.sum still pins them.
export GONOSUMDB='github.com/nrdcg/*'
# Traefik builds against a copy of lego (its ACME library) whose registry of
# DNS-01 providers is the stub in _legodns: the ~180 providers and their cloud
# SDKs are 35 % of Traefik's source, and the test rack issues no certificates.
# The copy and the wrapper's module files go to a private folder (a replace
# line to it), which a build killed half-way leaves for the pruning above.
tkey=$(key "$t/go.mod" "$t/go.sum" "$t/tools.go" "$stub")
src=
if [ ! -f "$cache/traefik-$v-$tkey/.done" ]; then
	src=$(mktemp -d "$cache/.build-src-traefik.XXXXXX")
	cp "$t/go.mod" "$t/go.sum" "$t/tools.go" "$src/"
	lego=$(cd "$src" && go mod download github.com/go-acme/lego/v4 && go list -m -f '{{.Dir}}' github.com/go-acme/lego/v4)
	cp -R "$lego" "$src/lego"
	chmod -R u+w "$src/lego"
	rm -rf "$src/lego/providers/dns"
	mkdir "$src/lego/providers/dns"
	cp "$stub" "$src/lego/providers/dns/"
	(cd "$src" && go mod edit -replace github.com/go-acme/lego/v4=./lego)
fi
build traefik "$v" "$tkey" "${src:-$t}" \
	"-X github.com/traefik/traefik/v3/pkg/version.Version=$v -X github.com/traefik/traefik/v3/pkg/version.BuildDate=1970-01-01T00:00:00Z" \
	github.com/traefik/traefik/v3/cmd/traefik
traefikdir=$out
[ -z "$src" ] || rm -rf "$src"
[ "$mode" = download ] && exit 0

# The set: one OCI tar per image, keyed by the inputs above.
set_key=$(echo "$rackdir $metallbdir $traefikdir" | sha256sum | cut -c1-12)
set_dir="$cache/set-$set_key"
[ -d "$set_dir" ] && touch "$set_dir"
if [ ! -f "$set_dir/images.json" ]; then
	echo "== writing images into $set_dir" >&2
	"$rackdir/mkimages" -out "$set_dir" -pause "$rackdir/pause" -sampleweb "$rackdir/sampleweb" \
		-metallb-controller "$metallbdir/controller" -metallb-speaker "$metallbdir/speaker" \
		-traefik "$traefikdir/traefik"
fi
# Every source change makes new folders: drop builds unused for a week, and image sets
# (450 MB each, rewritten whenever sampleweb changes) unused for an hour.
find "$cache" -maxdepth 1 -mindepth 1 -type d \( -name 'rack-*' -o -name 'metallb-*' -o -name 'traefik-*' \) \
	-mtime +7 -exec rm -rf {} +
find "$cache" -maxdepth 1 -mindepth 1 -type d -name 'set-*' -mmin +60 -exec rm -rf {} +
echo "$set_dir"
