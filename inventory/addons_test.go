package inventory

import (
	"slices"
	"strings"
	"testing"
)

const addonsBase = `cluster: {name: lab, k3s: {version: v1.33.5+k3s1}}
ssh: {user: pi}
nodes:
  - {name: s1, address: 10.0.0.1, role: server}
`

func TestTraefikDisablesBundled(t *testing.T) {
	inv, ps := parse(t, addonsBase+"addons:\n  traefik: {}\n", nil)
	if ps.HasErrors() {
		t.Fatalf("problems:\n%s", render(ps))
	}
	if !slices.Equal(inv.Cluster.K3s.Disable, []string{"traefik"}) {
		t.Errorf("disable %v, want [traefik]: k3s' bundled Traefik would claim ports 80/443 too", inv.Cluster.K3s.Disable)
	}
	// Written by the user already: not twice.
	inv, _ = parse(t, strings.Replace(addonsBase, "v1.33.5+k3s1}", "v1.33.5+k3s1, disable: [traefik]}", 1)+"addons:\n  traefik: {}\n", nil)
	if !slices.Equal(inv.Cluster.K3s.Disable, []string{"traefik"}) {
		t.Errorf("disable %v, want [traefik] once", inv.Cluster.K3s.Disable)
	}
	// Without the addon, k3s keeps its own.
	inv, _ = parse(t, addonsBase, nil)
	if slices.Contains(inv.Cluster.K3s.Disable, "traefik") {
		t.Errorf("disable %v without addons.traefik", inv.Cluster.K3s.Disable)
	}
}

func TestChartSettings(t *testing.T) {
	text := addonsBase + `addons:
  chartMirror: https://charts.lan/
  metallb: {chart: "https://charts.lan/metallb-0.16.2.tgz", pools: [{name: p, addresses: [10.0.1.10-10.0.1.20]}]}
  argocd: {repo: "https://git.lan/x.git", chart: "oci://registry.lan/charts/argo-cd"}
  longhorn: {chart: charts/longhorn-1.12.1.tgz}
`
	_, ps := parse(t, strings.Replace(text, "role: server}", "role: server, storage: {longhorn: /l}}", 1), nil)
	for _, w := range []want{
		{path: "addons.chartMirror", line: 6, msg: "local folder", sev: SeverityError},
		{path: "addons.metallb.chart", line: 7, msg: "packaged chart", sev: SeverityError},
	} {
		if !hasProblem(ps, w) {
			t.Errorf("no problem %+v in:\n%s", w, render(ps))
		}
	}
	if n := ps.Count(SeverityError); n != 2 {
		t.Errorf("%d errors, want 2 (oci:// and a relative .tgz are fine):\n%s", n, render(ps))
	}
}

// TestFourByteASN: AS numbers up to 2^32-1 load exactly (uint32 end to
// end, never int, which is 32 bits on a Pi with a 32-bit OS).
func TestFourByteASN(t *testing.T) {
	text := addonsBase + `addons:
  metallb:
    pools:
      - {name: r, addresses: [10.9.0.0/24], mode: bgp, myASN: 4200000001, peers: [{address: 10.0.0.254, asn: 4294967294}]}
`
	inv, ps := parse(t, text, nil)
	if ps.HasErrors() {
		t.Fatalf("problems:\n%s", render(ps))
	}
	p := inv.Addons.MetalLB.Pools[0]
	if p.MyASN != 4200000001 || p.Peers[0].ASN != 4294967294 {
		t.Errorf("ASNs %d, %d", p.MyASN, p.Peers[0].ASN)
	}
	_, ps = parse(t, strings.Replace(text, "4294967294", "4294967296", 1), nil)
	if !hasProblem(ps, want{path: "addons.metallb.pools[0].peers[0].asn", line: 8, msg: "0 to 4294967295", sev: SeverityError}) {
		t.Errorf("an ASN above 2^32-1 was not refused:\n%s", render(ps))
	}
}
