package metallb_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/addons/metallb"
)

const (
	typComponent = "rack:addons:MetalLB"
	typNamespace = "kubernetes:core/v1:Namespace"
	typRelease   = "kubernetes:helm.sh/v3:Release"
	typPool      = "kubernetes:metallb.io/v1beta1:IPAddressPool"
	typL2        = "kubernetes:metallb.io/v1beta1:L2Advertisement"
	typBGPAdv    = "kubernetes:metallb.io/v1beta1:BGPAdvertisement"
	typPeer      = "kubernetes:metallb.io/v1beta2:BGPPeer"
)

func run(t *testing.T, args *metallb.MetalLBArgs) (*addontest.Mocks, map[string][]string) {
	t.Helper()
	var ranges map[string][]string
	m := addontest.MustRun(t, func(ctx *pulumi.Context) error {
		c, err := metallb.NewMetalLB(ctx, "metallb", args)
		if err != nil {
			return err
		}
		c.Ranges.ApplyT(func(r map[string][]string) error { ranges = r; return nil })
		return nil
	})
	return m, ranges
}

func TestMetalLB(t *testing.T) {
	l2 := metallb.Pool{Name: "production", Addresses: []string{"192.168.1.210-192.168.1.250"}, Mode: metallb.ModeL2}
	cidr := metallb.Pool{Name: "lan", Addresses: []string{"192.168.1.200/29", "192.168.1.230-192.168.1.231"}}
	bgp := metallb.Pool{Name: "routed", Addresses: []string{"10.20.0.0/24"}, Mode: metallb.ModeBGP, MyASN: 64513,
		Peers: []metallb.Peer{{Address: "192.168.1.1", ASN: 64512}, {Address: "192.168.1.2", ASN: 64514}}}

	tests := []struct {
		name     string
		pools    []metallb.Pool
		wantL2   []string // pools announced over L2
		wantBGP  []string // pools announced over BGP
		wantPeer int
	}{
		{"one l2 range", []metallb.Pool{l2}, []string{"production"}, nil, 0},
		{"cidr and range, mode defaults to l2", []metallb.Pool{cidr}, []string{"lan"}, nil, 0},
		{"bgp pool", []metallb.Pool{bgp}, nil, []string{"routed"}, 2},
		{"l2 and bgp", []metallb.Pool{cidr, bgp}, []string{"lan"}, []string{"routed"}, 2},
		{"no pools: just the chart", nil, nil, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ranges := run(t, &metallb.MetalLBArgs{Pools: tt.pools})
			m.Component(t, typComponent, "metallb")
			rel, ok := m.Find(typRelease, "metallb")
			if !ok {
				t.Fatal("no helm release")
			}

			ns, ok := m.Find(typNamespace, "metallb")
			if !ok {
				t.Fatal("no namespace")
			}
			if got := ns.Field("metadata.name"); got != "metallb-system" {
				t.Errorf("namespace %v, want metallb-system", got)
			}
			for _, mode := range []string{"enforce", "audit", "warn"} {
				if got := ns.Field("metadata.labels").(map[string]any)["pod-security.kubernetes.io/"+mode]; got != "privileged" {
					t.Errorf("pod-security %s label = %v, want privileged (the speaker uses the host network)", mode, got)
				}
			}

			if rel.Field("namespace") != "metallb-system" || rel.Field("name") != "metallb" {
				t.Errorf("release in %v named %v", rel.Field("namespace"), rel.Field("name"))
			}
			if rel.Field("chart") != "metallb" || rel.Field("version") != metallb.ChartVersion ||
				rel.Field("repositoryOpts.repo") != "https://metallb.github.io/metallb" {
				t.Errorf("release chart %v %v from %v", rel.Field("chart"), rel.Field("version"), rel.Field("repositoryOpts.repo"))
			}
			if rel.Field("values.crds.enabled") != true {
				t.Errorf("values.crds.enabled = %v: the pools need the CRDs", rel.Field("values.crds.enabled"))
			}
			// frr-k8s (a DaemonSet and a webhook per node) only for BGP.
			if got := rel.Field("values.frrk8s.enabled"); got != (len(tt.wantBGP) > 0) {
				t.Errorf("values.frrk8s.enabled = %v with BGP pools %v", got, tt.wantBGP)
			}
			if !slices.Contains(rel.DependsOn, ns.Key()) {
				t.Errorf("release does not depend on its namespace: %v", rel.DependsOn)
			}

			if n := len(m.OfType(typPool)); n != len(tt.pools) {
				t.Fatalf("%d IPAddressPools, want %d", n, len(tt.pools))
			}
			for _, p := range tt.pools {
				got, ok := m.Find(typPool, "metallb-"+p.Name)
				if !ok {
					t.Fatalf("no IPAddressPool metallb-%s", p.Name)
				}
				if got.Field("metadata.name") != p.Name || got.Field("metadata.namespace") != "metallb-system" {
					t.Errorf("pool %s named %v in %v", p.Name, got.Field("metadata.name"), got.Field("metadata.namespace"))
				}
				if a := addontest.Strings(got.Field("spec.addresses")); !slices.Equal(a, p.Addresses) {
					t.Errorf("pool %s addresses %v, want %v", p.Name, a, p.Addresses)
				}
				if !slices.Contains(got.DependsOn, rel.Key()) {
					t.Errorf("pool %s does not depend on the chart (CRDs, webhook): %v", p.Name, got.DependsOn)
				}
				if !slices.Equal(ranges[p.Name], p.Addresses) {
					t.Errorf("Ranges[%s] = %v, want %v", p.Name, ranges[p.Name], p.Addresses)
				}
			}

			checkAdvertisements(t, m, typL2, tt.wantL2, rel.Key())
			checkAdvertisements(t, m, typBGPAdv, tt.wantBGP, rel.Key())
			peers := m.OfType(typPeer)
			if len(peers) != tt.wantPeer {
				t.Fatalf("%d BGPPeers, want %d", len(peers), tt.wantPeer)
			}
			for i, want := range bgp.Peers[:tt.wantPeer] {
				p, ok := m.Find(typPeer, fmt.Sprintf("metallb-routed-peer-%d", i))
				if !ok || p.Field("metadata.name") != fmt.Sprintf("routed-peer-%d", i) {
					t.Fatalf("no BGPPeer routed-peer-%d", i)
				}
				if p.Field("spec.myASN") != float64(bgp.MyASN) || p.Field("spec.peerASN") != float64(want.ASN) || p.Field("spec.peerAddress") != want.Address {
					t.Errorf("peer %d spec = %v", i, p.Field("spec"))
				}
				if !slices.Contains(p.DependsOn, rel.Key()) {
					t.Errorf("peer %d does not depend on the chart", i)
				}
			}
			if len(tt.wantBGP) > 0 {
				adv, _ := m.Find(typBGPAdv, "metallb-routed")
				if got := addontest.Strings(adv.Field("spec.peers")); !slices.Equal(got, []string{"routed-peer-0", "routed-peer-1"}) {
					t.Errorf("BGPAdvertisement peers %v: want the pool's own peers", got)
				}
			}
		})
	}
}

func checkAdvertisements(t *testing.T, m *addontest.Mocks, typ string, pools []string, release string) {
	t.Helper()
	ads := m.OfType(typ)
	if len(ads) != len(pools) {
		t.Fatalf("%d %s, want %d", len(ads), typ, len(pools))
	}
	for _, pool := range pools {
		ad, ok := m.Find(typ, "metallb-"+pool)
		if !ok {
			t.Fatalf("no %s for pool %s", typ, pool)
		}
		if got := addontest.Strings(ad.Field("spec.ipAddressPools")); !slices.Equal(got, []string{pool}) {
			t.Errorf("%s %s announces %v, want [%s]", typ, ad.Name, got, pool)
		}
		if ad.Field("metadata.name") != pool || ad.Field("metadata.namespace") != "metallb-system" {
			t.Errorf("%s named %v in %v", typ, ad.Field("metadata.name"), ad.Field("metadata.namespace"))
		}
		if !slices.Contains(ad.DependsOn, "kubernetes:metallb.io/v1beta1:IPAddressPool::metallb-"+pool) || !slices.Contains(ad.DependsOn, release) {
			t.Errorf("%s %s depends on %v, want its pool and the chart", typ, ad.Name, ad.DependsOn)
		}
	}
}

func TestMetalLBChartSource(t *testing.T) {
	pools := []metallb.Pool{{Name: "p", Addresses: []string{"10.0.0.1-10.0.0.9"}}}
	tests := []struct {
		chart, wantChart, wantVersion, wantRepo string
	}{
		{"", "metallb", metallb.ChartVersion, metallb.ChartRepo},
		{"oci://registry.lan/charts/metallb", "oci://registry.lan/charts/metallb", metallb.ChartVersion, ""},
		{"/srv/charts/metallb/", "/srv/charts/metallb", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.wantChart, func(t *testing.T) {
			m, _ := run(t, &metallb.MetalLBArgs{Chart: tt.chart, Pools: pools})
			rel, _ := m.Find(typRelease, "metallb")
			if rel.Field("chart") != tt.wantChart {
				t.Errorf("chart %v, want %s", rel.Field("chart"), tt.wantChart)
			}
			if v, _ := rel.Field("version").(string); v != tt.wantVersion {
				t.Errorf("version %q, want %q", v, tt.wantVersion)
			}
			if r, _ := rel.Field("repositoryOpts.repo").(string); r != tt.wantRepo {
				t.Errorf("repo %q, want %q", r, tt.wantRepo)
			}
		})
	}
}

func TestMetalLBRefuses(t *testing.T) {
	ok := metallb.Pool{Name: "p", Addresses: []string{"10.0.0.1-10.0.0.9"}}
	tests := []struct {
		name string
		args *metallb.MetalLBArgs
		want string
	}{
		{"nil args", nil, "args are required"},
		{"relative chart folder", &metallb.MetalLBArgs{Chart: "charts/metallb", Pools: []metallb.Pool{ok}}, "absolute"},
		{"http chart", &metallb.MetalLBArgs{Chart: "https://example.com/metallb.tgz", Pools: []metallb.Pool{ok}}, "oci:// mirror"},
		{"bgp without peers", &metallb.MetalLBArgs{Pools: []metallb.Pool{{Name: "b", Addresses: ok.Addresses, Mode: "bgp", MyASN: 1}}}, "needs myASN and at least one peer"},
		{"unknown mode", &metallb.MetalLBArgs{Pools: []metallb.Pool{{Name: "b", Addresses: ok.Addresses, Mode: "arp"}}}, `unknown mode "arp"`},
		{"duplicate pool", &metallb.MetalLBArgs{Pools: []metallb.Pool{ok, ok}}, "duplicate pool name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := addontest.Run(func(ctx *pulumi.Context) error {
				_, err := metallb.NewMetalLB(ctx, "metallb", tt.args)
				return err
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestMetalLBFourByteASN: private 4-byte AS numbers (RFC 6996,
// 4200000000-4294967294) are above 2^31: they reach the BGPPeer exactly,
// as numbers, on every host (an int conversion overflows on 32-bit ones;
// GOARCH=386 go test runs this there).
func TestMetalLBFourByteASN(t *testing.T) {
	const my, peer = uint32(4200000001), uint32(4294967294)
	m, _ := run(t, &metallb.MetalLBArgs{Pools: []metallb.Pool{{
		Name: "routed", Addresses: []string{"10.20.0.0/24"}, Mode: metallb.ModeBGP, MyASN: my,
		Peers: []metallb.Peer{{Address: "192.168.1.1", ASN: peer}},
	}}})
	p, ok := m.Find(typPeer, "metallb-routed-peer-0")
	if !ok {
		t.Fatal("no BGPPeer")
	}
	if got := p.Field("spec.myASN"); got != float64(my) {
		t.Errorf("myASN %v (%T), want %d", got, got, my)
	}
	if got := p.Field("spec.peerASN"); got != float64(peer) {
		t.Errorf("peerASN %v (%T), want %d", got, got, peer)
	}
}
