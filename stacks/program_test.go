package stacks

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/addons/metallb"
	"github.com/homelab/rack/inventory"
)

const (
	typMetalLB   = "rack:addons:MetalLB"
	typLonghorn  = "rack:addons:Longhorn"
	typLocalPV   = "rack:addons:LocalPV"
	typArgoCD    = "rack:addons:ArgoCD"
	typTraefik   = "rack:addons:Traefik"
	typRelease   = "kubernetes:helm.sh/v3:Release"
	typPool      = "kubernetes:metallb.io/v1beta1:IPAddressPool"
	typL2        = "kubernetes:metallb.io/v1beta1:L2Advertisement"
	typBGPAdv    = "kubernetes:metallb.io/v1beta1:BGPAdvertisement"
	typPeer      = "kubernetes:metallb.io/v1beta2:BGPPeer"
	typNodePatch = "kubernetes:core/v1:NodePatch"
	typPV        = "kubernetes:core/v1:PersistentVolume"
	typClass     = "kubernetes:storage.k8s.io/v1:StorageClass"
	typApp       = "kubernetes:argoproj.io/v1alpha1:Application"
	typStack     = "pulumi:pulumi:Stack"
)

// programCase is an inventory and what the program must make of it.
type programCase struct {
	name string
	inv  func(t *testing.T) *inventory.Inventory

	components   []string            // addon component types, in any order
	pools        map[string][]string // MetalLB ranges output
	l2, bgp      []string            // pools per announcement
	peers        int
	storageNodes []string // NodePatch targets
	replicas     float64
	pvs          map[string]string // PV name -> node
	classes      []string          // storageClasses output
	argoAddress  string
	charts       map[string]string // release name -> chart
}

func loadFile(path string) func(t *testing.T) *inventory.Inventory {
	return func(t *testing.T) *inventory.Inventory {
		t.Helper()
		inv, problems, err := inventory.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if problems.HasErrors() {
			t.Fatalf("%s is not valid:\n%v", path, problems)
		}
		return inv
	}
}

// parse builds an inventory from YAML in a folder of its own (charts are
// resolved against it).
func parse(yaml string) func(t *testing.T) *inventory.Inventory {
	return func(t *testing.T) *inventory.Inventory {
		t.Helper()
		file := filepath.Join(t.TempDir(), "rack.yaml")
		if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return loadFile(file)(t)
	}
}

const edgeNodes = `
cluster: {name: edge, k3s: {version: v1.33.5+k3s1}}
ssh: {user: pi}
nodes:
  - {name: a, address: 10.0.0.1, role: server}
  - {name: b, address: 10.0.0.2, role: agent, storage: {longhorn: /mnt/disk}}
`

func programCases() []programCase {
	return []programCase{
		{
			name:         "rack.yaml",
			inv:          loadFile("../inventory/rack.yaml"),
			components:   []string{typMetalLB, typLonghorn, typLocalPV, typArgoCD, typTraefik},
			pools:        map[string][]string{"production": {"192.168.1.210-192.168.1.250"}},
			l2:           []string{"production"},
			storageNodes: []string{"pinecone-1", "potato-7"},
			replicas:     2,
			pvs:          map[string]string{"storage-pv": "potato-7"},
			classes:      []string{"longhorn", "local-storage"},
			argoAddress:  "https://192.168.1.250",
			charts:       map[string]string{"metallb": "metallb", "longhorn": "longhorn", "argocd": "argo-cd", "traefik": "traefik"},
		},
		{
			name:        "single-node.yaml",
			inv:         loadFile("../inventory/examples/single-node.yaml"),
			components:  []string{typLocalPV},
			pools:       map[string][]string{},
			pvs:         map[string]string{"data": "solo"},
			classes:     []string{"local-storage"},
			argoAddress: "",
		},
		{
			name:         "ha.yaml",
			inv:          loadFile("../inventory/examples/ha.yaml"),
			components:   []string{typMetalLB, typLonghorn},
			pools:        map[string][]string{"lan": {"192.168.1.200/29"}, "routed": {"10.20.0.0/24"}},
			l2:           []string{"lan"},
			bgp:          []string{"routed"},
			peers:        1,
			storageNodes: []string{"worker-1", "worker-2"},
			replicas:     2, // defaulted: min(3, 2 storage nodes)
			classes:      []string{"longhorn"},
			charts:       map[string]string{"metallb": "metallb", "longhorn": "longhorn"},
		},
		{
			name: "no MetalLB: Argo CD stays ClusterIP",
			inv: parse(edgeNodes + `
addons:
  argocd: {repo: "https://git.lan/gitops.git"}
`),
			components:  []string{typArgoCD},
			pools:       map[string][]string{},
			argoAddress: "https://argocd-server.argocd.svc.cluster.local",
			charts:      map[string]string{"argocd": "argo-cd"},
		},
		{
			name: "no storage offered: no node is patched",
			inv: parse(`
cluster: {name: edge, k3s: {version: v1.33.5+k3s1}}
ssh: {user: pi}
nodes:
  - {name: a, address: 10.0.0.1, role: server}
addons:
  localPV: {storageClass: slow}
`),
			components: []string{typLocalPV},
			pools:      map[string][]string{},
			classes:    []string{"slow"},
		},
		{
			name: "bgp only, argo address avoids .255",
			inv: parse(edgeNodes + `
addons:
  metallb:
    pools:
      - {name: routed, addresses: [10.9.0.0/24], mode: bgp, myASN: 65001, peers: [{address: 10.0.0.254, asn: 65000}, {address: 10.0.0.253, asn: 65000}]}
  argocd: {repo: "https://git.lan/gitops.git", path: clusters/edge, revision: v2}
`),
			components:  []string{typMetalLB, typArgoCD},
			pools:       map[string][]string{"routed": {"10.9.0.0/24"}},
			bgp:         []string{"routed"},
			peers:       2,
			argoAddress: "https://10.9.0.254",
			charts:      map[string]string{"metallb": "metallb", "argocd": "argo-cd"},
		},
		{
			name: "chart overrides: relative folder and oci mirror",
			inv: parse(edgeNodes + `
addons:
  metallb:
    chart: charts/metallb
    pools: [{name: p, addresses: [10.0.1.10-10.0.1.20]}]
  longhorn: {chart: "oci://registry.lan/charts/longhorn", replicas: 1, defaultClass: false}
`),
			components:   []string{typMetalLB, typLonghorn},
			pools:        map[string][]string{"p": {"10.0.1.10-10.0.1.20"}},
			l2:           []string{"p"},
			storageNodes: []string{"b"},
			replicas:     1,
			classes:      []string{"longhorn"},
			charts:       map[string]string{"metallb": "<dir>/charts/metallb", "longhorn": "oci://registry.lan/charts/longhorn"},
		},
	}
}

func runProgram(t *testing.T, inv *inventory.Inventory) (*addontest.Mocks, map[string]any) {
	t.Helper()
	// The outputs map is not a resource's output, so the run does not wait
	// for it: it is handed over on a channel.
	got := make(chan []byte, 1)
	m := addontest.MustRun(t, func(ctx *pulumi.Context) error {
		p, err := deploy(ctx, inv)
		if err != nil {
			return err
		}
		p.Outputs.ToMapOutput().ApplyT(func(o map[string]any) error {
			b, err := json.Marshal(o)
			got <- b
			return err
		})
		return nil
	})
	var outputs map[string]any
	select {
	case b := <-got:
		// As the engine would see them: plain JSON values.
		if err := json.Unmarshal(b, &outputs); err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stack outputs never resolved")
	}
	return m, outputs
}

func TestProgram(t *testing.T) {
	for _, tc := range programCases() {
		t.Run(tc.name, func(t *testing.T) {
			inv := tc.inv(t)
			m, outputs := runProgram(t, inv)

			var components []string
			for _, r := range m.Resources() {
				if strings.HasPrefix(r.Type, "rack:addons:") {
					components = append(components, r.Type)
					if r.Parent != typStack+"::rack-test" {
						t.Errorf("%s is parented to %q, want the stack", r.Key(), r.Parent)
					}
				} else if !strings.HasPrefix(r.Parent, "rack:addons:") {
					t.Errorf("%s is not inside a component (parent %q)", r.Key(), r.Parent)
				}
			}
			if !sameSet(components, tc.components) {
				t.Errorf("components %v, want %v", components, tc.components)
			}

			// Stack outputs.
			wantRanges := map[string]any{}
			for k, v := range tc.pools {
				wantRanges[k] = toAny(v)
			}
			if got := outputs[OutputMetalLBRanges]; !reflect.DeepEqual(got, wantRanges) {
				t.Errorf("%s = %v, want %v", OutputMetalLBRanges, got, wantRanges)
			}
			if got := outputs[OutputStorageClasses]; !reflect.DeepEqual(got, toAny(tc.classes)) {
				t.Errorf("%s = %v, want %v", OutputStorageClasses, got, tc.classes)
			}
			if got := outputs[OutputArgoCDAddress]; got != tc.argoAddress {
				t.Errorf("%s = %v, want %q", OutputArgoCDAddress, got, tc.argoAddress)
			}

			// MetalLB.
			var pools []string
			for _, p := range m.OfType(typPool) {
				pools = append(pools, p.Field("metadata.name").(string))
				if got := addontest.Strings(p.Field("spec.addresses")); !slices.Equal(got, tc.pools[p.Field("metadata.name").(string)]) {
					t.Errorf("pool %s addresses %v", p.Name, got)
				}
			}
			if !sameSet(pools, keys(tc.pools)) {
				t.Errorf("IPAddressPools %v, want %v", pools, keys(tc.pools))
			}
			if got := poolsOf(m.OfType(typL2)); !sameSet(got, tc.l2) {
				t.Errorf("L2Advertisements for %v, want %v", got, tc.l2)
			}
			if got := poolsOf(m.OfType(typBGPAdv)); !sameSet(got, tc.bgp) {
				t.Errorf("BGPAdvertisements for %v, want %v", got, tc.bgp)
			}
			if got := len(m.OfType(typPeer)); got != tc.peers {
				t.Errorf("%d BGPPeers, want %d", got, tc.peers)
			}

			// Longhorn.
			var marked []string
			for _, p := range m.OfType(typNodePatch) {
				marked = append(marked, p.Field("metadata.name").(string))
			}
			if !sameSet(marked, tc.storageNodes) {
				t.Errorf("Longhorn disks on %v, want exactly %v", marked, tc.storageNodes)
			}
			if rel, ok := m.Find(typRelease, "longhorn"); ok {
				if got := rel.Field("values.defaultSettings.defaultReplicaCount"); got != tc.replicas {
					t.Errorf("Longhorn replicas %v, want %v", got, tc.replicas)
				}
				if got := rel.Field("values.persistence.defaultClass"); got != inv.Addons.Longhorn.IsDefaultClass() {
					t.Errorf("Longhorn defaultClass %v", got)
				}
			}

			// Local PVs.
			pvs := map[string]string{}
			for _, pv := range m.OfType(typPV) {
				node := addontest.Strings(pv.Field("spec.nodeAffinity.required.nodeSelectorTerms").([]any)[0].(map[string]any)["matchExpressions"].([]any)[0].(map[string]any)["values"])
				pvs[pv.Field("metadata.name").(string)] = strings.Join(node, ",")
			}
			if len(pvs) != len(tc.pvs) || (len(pvs) > 0 && !reflect.DeepEqual(pvs, tc.pvs)) {
				t.Errorf("PVs %v, want %v", pvs, tc.pvs)
			}
			if _, ok := m.Find(typClass, "localpv"); ok != slices.Contains(tc.components, typLocalPV) {
				t.Errorf("local StorageClass present: %v", ok)
			}

			// Charts.
			charts := map[string]string{}
			for _, r := range m.OfType(typRelease) {
				charts[r.Name] = r.Field("chart").(string)
			}
			want := map[string]string{}
			for k, v := range tc.charts {
				want[k] = strings.ReplaceAll(v, "<dir>", mustAbs(t, inv.Dir()))
			}
			if len(charts) != len(want) || (len(charts) > 0 && !reflect.DeepEqual(charts, want)) {
				t.Errorf("charts %v, want %v", charts, want)
			}

			// Argo CD.
			if app, ok := m.Find(typApp, "argocd-root"); ok {
				a := inv.Addons.ArgoCD
				if app.Field("spec.source.repoURL") != a.Repo || app.Field("spec.source.path") != a.Path || app.Field("spec.source.targetRevision") != a.Revision {
					t.Errorf("root app source %v, want %s %s %s", app.Field("spec.source"), a.Repo, a.Path, a.Revision)
				}
				if comp, _ := m.Find(typArgoCD, "argocd"); slices.Contains(tc.components, typMetalLB) && !dependsOnMetalLB(comp) {
					t.Errorf("Argo CD does not wait for MetalLB (its LoadBalancer address): %v", comp.DependsOn)
				}
			}
		})
	}
}

func dependsOnMetalLB(r addontest.Resource) bool {
	for _, d := range r.DependsOn {
		if strings.HasPrefix(d, typMetalLB+"::") || strings.HasPrefix(d, typRelease+"::metallb") {
			return true
		}
	}
	return false
}

func TestProgramRefusesInvalidAddons(t *testing.T) {
	// Inventory validation catches this first; the component must too, for
	// programs built from inventories constructed in code.
	inv := &inventory.Inventory{
		Cluster: inventory.Cluster{Name: "x"},
		Nodes:   []inventory.Node{{Name: "a", Address: "10.0.0.1", Role: "server"}},
		Addons:  inventory.Addons{Longhorn: &inventory.Longhorn{Replicas: 1}},
	}
	_, err := addontest.Run(Program(inv))
	if err == nil || !strings.Contains(err.Error(), "no node offers storage") {
		t.Fatalf("error %v, want Longhorn's no-storage-node message", err)
	}
}

func TestArgoCDAddress(t *testing.T) {
	tests := []struct {
		pools []inventory.IPPool
		want  string
	}{
		{[]inventory.IPPool{{Addresses: []string{"192.168.1.210-192.168.1.250"}}}, "192.168.1.250"},
		{[]inventory.IPPool{{Addresses: []string{"192.168.1.200/29"}}}, "192.168.1.207"},
		{[]inventory.IPPool{{Addresses: []string{"10.0.0.0/24"}}}, "10.0.0.254"},
		{[]inventory.IPPool{{Addresses: []string{"10.0.0.0/16"}}}, "10.0.255.254"},
		{[]inventory.IPPool{{Addresses: []string{"10.0.0.255/32"}}}, "10.0.0.255"},
		{[]inventory.IPPool{{Addresses: []string{"10.1.0.0/24", "10.2.0.1-10.2.0.9"}}, {Addresses: []string{"10.3.0.0/24"}}}, "10.2.0.9"},
		{[]inventory.IPPool{{Addresses: []string{"fd00::/120"}}}, "fd00::ff"},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := argoCDAddress(tt.pools); got != tt.want {
			t.Errorf("argoCDAddress(%v) = %q, want %q", tt.pools, got, tt.want)
		}
	}
}

func TestMetalLBChartMatchesCRDModule(t *testing.T) {
	// The dry runs validate against the CRD module: it must carry the very
	// chart version the component installs.
	dir, err := addontest.ModuleDir(context.Background(), metallb.CRDModule)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "charts", "metallb", "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Split(string(b), "\n"), "version: "+metallb.ChartVersion) {
		t.Errorf("%s ships a chart other than %s:\n%s", metallb.CRDModule, metallb.ChartVersion, b)
	}
}

func poolsOf(ads []addontest.Resource) []string {
	var out []string
	for _, a := range ads {
		out = append(out, addontest.Strings(a.Field("spec.ipAddressPools"))...)
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func keys(m map[string][]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func toAny(s []string) []any {
	out := []any{}
	for _, v := range s {
		out = append(out, v)
	}
	return out
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestPlatformRun checks the program rack up runs: an explicit provider
// whose kubeconfig is a secret, used by every Kubernetes resource.
func TestPlatformRun(t *testing.T) {
	inv := loadFile("../inventory/rack.yaml")(t)
	const kubeconfig = "apiVersion: v1\nkind: Config\nusers: [{name: admin, user: {client-key-data: c2VjcmV0}}]\n"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := platformRun(inv, Options{Kubeconfig: path})
	if err != nil {
		t.Fatal(err)
	}
	if r.stack != "homelab" || r.stateDir != inv.StateDir() || !r.needsKubernetes {
		t.Errorf("run %+v: want stack homelab in %s, checking the kubernetes plugin", r, inv.StateDir())
	}
	m := addontest.MustRun(t, r.program)

	p, ok := m.Find("pulumi:providers:kubernetes", "rack")
	if !ok {
		t.Fatal("no explicit kubernetes provider")
	}
	kc := p.Inputs["kubeconfig"]
	if !kc.IsSecret() || kc.SecretValue().Element.StringValue() != kubeconfig {
		t.Errorf("provider kubeconfig %v: want the file's content, as a secret", kc)
	}
	n := 0
	for _, res := range m.Resources() {
		if res.Custom && strings.HasPrefix(res.Type, "kubernetes:") {
			n++
			if !strings.Contains(res.Provider, "::pulumi:providers:kubernetes::rack::") {
				t.Errorf("%s uses provider %q, not rack's", res.Key(), res.Provider)
			}
		}
	}
	if n == 0 {
		t.Fatal("no kubernetes resources")
	}
}
