#!/usr/bin/env bash
# Builds the test rack's Kubernetes binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy and kubectl from k8s.io/kubernetes, kwok,
# etcd with etcdctl and etcdutl, and k3s' SQLite datastore kine) into a git-ignored
# cache keyed by the wrapper modules.
# All of them come from ONE `go build`: they share most packages, and a single
# build compiles each shared package once (cold: see the README's timings).
# Prints the folder holding the binaries on its last line.
#
#   build-controlplane.sh kubelet VERSION
# builds a kubelet that reports VERSION (as k3s' embedded kubelet reports the
# k3s version) for the test rack's real nodes, and prints its path. Only the
# link step differs from the plain kubelet's build: about a minute warm.
set -euo pipefail
. "$(dirname "$0")/build-env.sh"
# Static, as upstream releases them, whoever calls this script: the tests
# (which build with CGO_ENABLED=0) ask for stamped kubelets, and those cost
# only a link when every package was compiled with the same flags (measured
# cold: with cgo on here, the first stamped kubelet compiled the whole
# kubelet again, 9 minutes while the tests waited).
export CGO_ENABLED=0
cd "$(dirname "$0")/tools"
K8S_VERSION=$(awk '$1=="k8s.io/kubernetes"{print $2}' go.mod)
key=$( (cat go.mod go.sum tools.go kine/go.mod kine/go.sum kine/tools.go && echo "CGO_ENABLED=$CGO_ENABLED") | sha256sum | cut -c1-12)
out="${CACHE_DIR:-$(cd ../.. && pwd)/.cache}/controlplane/${K8S_VERSION}-${key}"
mkdir -p "$out"

if [ "${1:-}" = kubelet ]; then
	v=${2:?usage: build-controlplane.sh kubelet VERSION}
	case "$v" in v[0-9]*.[0-9]*.[0-9]*) ;; *) echo "kubelet version $v: expected vX.Y.Z[+k3sN]" >&2; exit 2 ;; esac
	if [ ! -x "$out/kubelet-$v" ]; then
		minor=${v#v1.}
		minor=${minor%%.*}
		echo "== building a kubelet that reports $v" >&2
		tmp=$(mktemp -d "$out/.build.XXXXXX")
		trap 'rm -rf "$tmp"' EXIT
		go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
			-o "$tmp/kubelet" k8s.io/kubernetes/cmd/kubelet
		mv -f "$tmp/kubelet" "$out/kubelet-$v"
	fi
	echo "$out/kubelet-$v"
	exit 0
fi

# etcd as k3s v1.36 embeds it (3.6): Debian's 3.4 is older than Kubernetes
# 1.36 supports, and its API servers turned watch progress requests off
# (etcd < 3.4.31), so kwok's streaming lists failed and a Node could go
# NotReady without a lease renewal (seen in a cold run: a refused `rack node
# remove`). The etcd binary is the server module's main package.
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl kwok etcd etcdctl etcdutl)
missing=0
for b in "${bins[@]}"; do [ -x "$out/$b" ] || missing=1; done
if [ $missing -eq 1 ]; then
	minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor}"
	echo "== building ${bins[*]} ($K8S_VERSION) in one go build (slow the first time)" >&2
	# Into a private folder, then renamed one by one: test packages may run this
	# script at the same time, and a half-written binary must never be seen.
	tmp=$(mktemp -d "$out/.build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
		k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl \
		sigs.k8s.io/kwok/cmd/kwok \
		go.etcd.io/etcd/server/v3 go.etcd.io/etcd/etcdctl/v3 go.etcd.io/etcd/etcdutl/v3
	mv -f "$tmp/server" "$tmp/etcd" # go build names it after its module path
	for b in "${bins[@]}"; do mv -f "$tmp/$b" "$out/$b"; done
	# Removed here: the EXIT trap sees only the last folder made (kine's, below).
	rm -rf "$tmp"
fi
# SQLite as kine's own build script (and k3s) compile it: with the dbstat
# table, which kine's etcd Status call reads for the database size. Without
# it Status fails, the API server turns off watch progress requests, and
# clients' streaming lists (client-go's WatchListClient, on by default since
# 1.35) fail on every watch.
kine_cflags="-DSQLITE_ENABLE_DBSTAT_VTAB=1 -DSQLITE_USE_ALLOCA=1"
if [ ! -x "$out/kine" ] || [ "$(cat "$out/kine.cflags" 2>/dev/null)" != "$kine_cflags" ]; then
	echo "== building kine (k3s' SQLite datastore)" >&2
	tmp=$(mktemp -d "$out/.build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	(cd kine && CGO_ENABLED=1 CGO_CFLAGS="$kine_cflags" go build -trimpath -ldflags "-s -w" -o "$tmp/kine" github.com/k3s-io/kine)
	echo "$kine_cflags" >"$tmp/kine.cflags"
	mv -f "$tmp/kine" "$out/kine"
	mv -f "$tmp/kine.cflags" "$out/kine.cflags"
	rm -rf "$tmp"
fi
echo "$out"
