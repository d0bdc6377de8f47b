#!/usr/bin/env bash
# make demo: a 3-machine test rack on this computer whose pods really run,
# brought up by rack: the nodes, then MetalLB, Traefik, local volumes and a
# sample app; then a request to the app through MetalLB's address, from
# this machine as from a laptop on the LAN. Needs root. make demo-down
# removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CACHE_DIR="${CACHE_DIR:-$PWD/.cache}"
dir=.demo

echo "== tools (built once, cached in .cache/: see make test)"
cp=$(scripts/build-controlplane.sh | tail -n 1)
pulumi_dir=$(scripts/build-pulumi.sh | tail -n 1)
provider=$(scripts/build-provider.sh | tail -n 1)
RACK_IMAGES_DIR=$(scripts/build-images.sh | tail -n 1)
export RACK_CONTROLPLANE_DIR=$cp RACK_IMAGES_DIR

go run ./scripts/demo up -dir "$dir"

# rack finds the pulumi CLI on PATH and the kubernetes plugin in PULUMI_HOME,
# the pinned charts in the chart mirror (../shared/charts, as in the tests).
plugin=resource-kubernetes-v$(sed -n 's/^[[:space:]]*KubernetesPluginVersion[[:space:]]*=[[:space:]]*"\(.*\)"/\1/p' stacks/auto.go)
mkdir -p "$dir/pulumi-home/plugins/$plugin"
ln -sfn "$provider/plugins/$plugin/pulumi-resource-kubernetes" "$dir/pulumi-home/plugins/$plugin/pulumi-resource-kubernetes"
export PATH="$pulumi_dir:$PATH" PULUMI_HOME="$PWD/$dir/pulumi-home" KUBECONFIG="$PWD/$dir/kubeconfig"
export RACK_CHART_MIRROR="${RACK_CHART_MIRROR:-$(cd .. && pwd)/shared/charts}"
rack() { echo "\$ rack $*"; bin/rack -i "$dir/rack.yaml" "$@"; }

rack plan
rack up --yes
rack status
rack app status web
lb=$("$cp/kubectl" get service -n traefik traefik -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
echo "\$ curl -H 'Host: web.home.arpa' http://$lb/"
curl -sS --max-time 10 -H 'Host: web.home.arpa' "http://$lb/"
echo
echo "The demo rack keeps running: bin/rack -i $dir/rack.yaml status (with KUBECONFIG=$dir/kubeconfig); make demo-down removes it."
