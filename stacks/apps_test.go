package stacks

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	k8scorev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	k8sresource "k8s.io/apimachinery/pkg/api/resource"
	k8smetav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/apps/apptest"
	"github.com/homelab/rack/apps/release"
	"github.com/homelab/rack/internal/testcluster"
	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/inventory"
)

// appMocks records, beside what addontest.Mocks does, the options the
// engine sees that it does not: retainOnDelete, and which inputs are secret.
type appMocks struct {
	addontest.Mocks
	mu       sync.Mutex
	retained map[string]bool     // type::name
	secrets  map[string][]string // type::name -> secret input keys
	timeouts map[string]string   // type::name -> custom update timeout
	replaces map[string]string   // type::name -> deleteBeforeReplace / replaceOnChanges asked
}

func (m *appMocks) NewResource(args pulumi.MockResourceArgs) (string, resource.PropertyMap, error) {
	key := args.TypeToken + "::" + args.Name
	m.mu.Lock()
	if rpc := args.RegisterRPC; rpc != nil {
		if rpc.GetRetainOnDelete() {
			m.retained[key] = true
		}
		if ct := rpc.GetCustomTimeouts(); ct != nil {
			m.timeouts[key] = ct.GetUpdate()
		}
		if rpc.GetDeleteBeforeReplace() || rpc.GetDeleteBeforeReplaceDefined() || len(rpc.GetReplaceOnChanges()) > 0 {
			m.replaces[key] = fmt.Sprintf("deleteBeforeReplace %v, replaceOnChanges %v", rpc.GetDeleteBeforeReplace(), rpc.GetReplaceOnChanges())
		}
	}
	for k, v := range args.Inputs {
		if v.ContainsSecrets() {
			m.secrets[key] = append(m.secrets[key], string(k))
		}
	}
	m.mu.Unlock()
	return m.Mocks.NewResource(args)
}

// runApps runs the apps program under mocks and returns what it registered
// and the releases output.
func runApps(t *testing.T, inv *inventory.Inventory, states map[string]release.State, deliver bool) (*appMocks, map[string]release.State) {
	t.Helper()
	m := &appMocks{retained: map[string]bool{}, secrets: map[string][]string{}, timeouts: map[string]string{}, replaces: map[string]string{}}
	got := make(chan []byte, 1)
	err := pulumi.RunErr(func(ctx *pulumi.Context) error {
		d, err := deployApps(ctx, inv, states, appsProgram{deliver: deliver, readyTimeout: 3 * time.Minute})
		if err != nil {
			return err
		}
		d.Releases.ToMapOutput().ApplyT(func(o map[string]any) error {
			b, err := json.Marshal(o)
			got <- b
			return err
		})
		return nil
	}, pulumi.WithMocks(addontest.Project, addontest.Stack, m))
	if err != nil {
		t.Fatalf("apps program failed under mocks: %v", err)
	}
	var out map[string]release.State
	select {
	case b := <-got:
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the releases output never resolved")
	}
	return m, out
}

// ghostMySQL is the example inventory with secrets, its env set.
func ghostMySQL(t *testing.T) *inventory.Inventory {
	t.Helper()
	t.Setenv("GHOST_DB_PASSWORD", "pw-ghost-"+t.Name())
	t.Setenv("MYSQL_ROOT_PASSWORD", "pw-root-"+t.Name())
	return loadFile("../inventory/examples/ghost-mysql.yaml")(t)
}

// deployedStates is release.Deploy of a fresh rack: every app stable on
// its inventory image.
func deployedStates(t *testing.T, inv *inventory.Inventory) map[string]release.State {
	t.Helper()
	st, err := release.Deploy(inv, nil)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// withCandidates deploys image+"-next" for every side-by-side app over st.
func withCandidates(t *testing.T, inv *inventory.Inventory, st map[string]release.State) map[string]release.State {
	t.Helper()
	next := *inv
	next.Apps = slices.Clone(inv.Apps)
	for i := range next.Apps {
		next.Apps[i].Image += "-next"
	}
	out, err := release.Deploy(&next, st)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAppsProgram: the program registers, per app, exactly the objects
// apps.Render makes of the app and its state (the inputs are the objects),
// in waves, PVCs and the namespace retained, secret env as Pulumi secrets;
// the releases output is the states.
func TestAppsProgram(t *testing.T) {
	cases := []struct {
		name string
		inv  func(t *testing.T) *inventory.Inventory
		next bool
	}{
		{"rack.yaml fresh", loadFile("../inventory/rack.yaml"), false},
		{"rack.yaml candidates", loadFile("../inventory/rack.yaml"), true},
		{"ha.yaml candidates", loadFile("../inventory/examples/ha.yaml"), true},
		{"ghost-mysql secrets", ghostMySQL, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inv := tc.inv(t)
			states := deployedStates(t, inv)
			if tc.next {
				states = withCandidates(t, inv, states)
			}
			m, out := runApps(t, inv, states, true)
			if !reflect.DeepEqual(out, states) {
				t.Errorf("releases output\n%v\nwant\n%v", out, states)
			}
			ns, ok := m.Find("kubernetes:core/v1:Namespace", apps.DefaultNamespace)
			if !ok || !m.retained[ns.Key()] {
				t.Errorf("namespace %s registered %v, retained %v: deleting it would delete the volumes in it", apps.DefaultNamespace, ok, m.retained[ns.Key()])
			}
			for i, app := range inv.Apps {
				comp, ok := m.Find(TypeApp, app.Name)
				if !ok {
					t.Fatalf("no %s component for %s", TypeApp, app.Name)
				}
				if !slices.Contains(comp.DependsOn, ns.Key()) {
					t.Errorf("%s does not depend on its namespace", app.Name)
				}
				want, err := apps.Render(app, states[app.Name].Release, apps.Options{SecretEnv: inv.EnvFromEnvironment(i)})
				if err != nil {
					t.Fatal(err)
				}
				children := m.Children(comp.Key())
				if len(children) != len(want) {
					t.Errorf("%s: %d children, want %d objects", app.Name, len(children), len(want))
				}
				for _, o := range want {
					key := TypeToken(o) + "::" + o.GetName()
					r, ok := m.Find(TypeToken(o), o.GetName())
					if !ok {
						t.Errorf("%s: %s is not registered", app.Name, apps.Key(o))
						continue
					}
					got := plainObject(r)
					if apps.IsSecret(o) {
						if !slices.Contains(m.secrets[key], "stringData") {
							t.Errorf("%s: the Secret's stringData is not a Pulumi secret", key)
						}
						checkSecretValues(t, app, inv.EnvFromEnvironment(i), got)
						got = withPlaceholders(got)
					} else if len(m.secrets[key]) > 0 {
						t.Errorf("%s: inputs %v are secret", key, m.secrets[key])
					}
					if !reflect.DeepEqual(normalise(t, got), normalise(t, o.Object)) {
						t.Errorf("%s: registered inputs differ from the rendered object:\n got %v\nwant %v", key, got, o.Object)
					}
					// Exactly apps.DependsOn: a route on what it sends requests to, the rest on the waves before.
					var deps []string
					for _, d := range apps.DependsOn(o, want) {
						deps = append(deps, TypeToken(d)+"::"+d.GetName())
					}
					gotDeps := slices.Clone(r.DependsOn)
					slices.Sort(gotDeps)
					slices.Sort(deps)
					if !slices.Equal(gotDeps, deps) {
						t.Errorf("%s depends on %v, want %v", key, gotDeps, deps)
					}
					// Updated in place, never deleted and created again: a route would be gone in between.
					if why, ok := m.replaces[key]; ok {
						t.Errorf("%s asks to be replaced: %s", key, why)
					}
					if m.retained[key] != (o.GetKind() == "PersistentVolumeClaim") {
						t.Errorf("%s retained on delete: %v", key, m.retained[key])
					}
					if m.timeouts[key] != "3m0s" {
						t.Errorf("%s update timeout %q, want the ready timeout", key, m.timeouts[key])
					}
				}
			}
		})
	}
}

// plainObject is a resource's inputs with secrets unwrapped.
func plainObject(r addontest.Resource) map[string]any {
	var plain func(v resource.PropertyValue) (any, bool)
	plain = func(v resource.PropertyValue) (any, bool) {
		if v.IsSecret() {
			return v.SecretValue().Element.MapRepl(nil, plain), true
		}
		return nil, false
	}
	return r.Inputs.MapRepl(nil, plain)
}

// checkSecretValues: the registered Secret carries the real values.
func checkSecretValues(t *testing.T, app inventory.App, keys []string, got map[string]any) {
	t.Helper()
	data, _ := got["stringData"].(map[string]any)
	if len(keys) == 0 || len(data) != len(keys) {
		t.Fatalf("%s: Secret stringData %d keys, want %v", app.Name, len(data), keys)
	}
	for _, k := range keys {
		if data[k] != app.Env[k] {
			t.Errorf("%s: Secret value of %s is not the inventory's", app.Name, k)
		}
	}
}

// withPlaceholders replaces a Secret's values with the renderer's placeholder.
func withPlaceholders(o map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range o {
		out[k] = v
	}
	data := map[string]any{}
	for k := range o["stringData"].(map[string]any) {
		data[k] = apps.SecretPlaceholder
	}
	out["stringData"] = data
	return out
}

// normalise makes an object comparable across JSON round trips (numbers
// as float64).
func normalise(t *testing.T, o map[string]any) any {
	t.Helper()
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestAppsProgramArgoCDDelivers: with deliverApps, the program registers no
// Kubernetes object at all and still records the states.
func TestAppsProgramArgoCDDelivers(t *testing.T) {
	inv := loadFile("../inventory/rack.yaml")(t)
	inv.Addons.ArgoCD.DeliverApps = true
	if DeliversApps(inv) {
		t.Fatal("DeliversApps with deliverApps: true")
	}
	states := withCandidates(t, inv, deployedStates(t, inv))
	m, out := runApps(t, inv, states, DeliversApps(inv))
	for _, r := range m.Resources() {
		if r.Type != "pulumi:pulumi:Stack" {
			t.Errorf("registered %s although Argo CD delivers the apps", r.Key())
		}
	}
	if !reflect.DeepEqual(out, states) {
		t.Errorf("releases output %v, want %v", out, states)
	}
}

// TestAppsProgramForgetsRemovedApps: an app that left the inventory is
// neither delivered nor kept in the releases output, so its objects go and
// the same name added back later starts from a fresh release (UpApps runs
// release.Deploy, which keeps only the inventory's apps, and the program
// records only those too).
func TestAppsProgramForgetsRemovedApps(t *testing.T) {
	inv := loadFile("../inventory/rack.yaml")(t)
	states := withCandidates(t, inv, deployedStates(t, inv))
	gone := inv.Apps[1].Name
	without := *inv
	without.Apps = slices.Delete(slices.Clone(inv.Apps), 1, 2)
	m, out := runApps(t, &without, states, true)
	if _, ok := out[gone]; ok || len(out) != len(without.Apps) {
		t.Errorf("releases output after %s left the inventory: %v", gone, keysOfStates(out))
	}
	if _, ok := m.Find(TypeApp, gone); ok {
		t.Errorf("%s is still delivered", gone)
	}
	again, err := release.Deploy(inv, out)
	if err != nil {
		t.Fatal(err)
	}
	if st := again[gone]; st.Candidate != "" || st.Stable != inv.Apps[1].Image {
		t.Errorf("%s added back: %+v, want a fresh release of %s", gone, st, inv.Apps[1].Image)
	}
}

func keysOfStates(m map[string]release.State) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestRenderIsWhatPulumiRegisters: rack render's files, read back from
// disk, are the objects the apps component registers (secrets aside: the
// files hold placeholders, Pulumi the values, as secrets).
func TestRenderIsWhatPulumiRegisters(t *testing.T) {
	for _, name := range []string{"rack.yaml", "ghost-mysql"} {
		t.Run(name, func(t *testing.T) {
			var inv *inventory.Inventory
			if name == "rack.yaml" {
				inv = loadFile("../inventory/rack.yaml")(t)
			} else {
				inv = ghostMySQL(t)
			}
			states := withCandidates(t, inv, deployedStates(t, inv))
			m, _ := runApps(t, inv, states, true)

			var list []apps.RepoApp
			for i, app := range inv.Apps {
				list = append(list, apps.RepoApp{App: app, Release: states[app.Name].Release, SecretEnv: inv.EnvFromEnvironment(i)})
			}
			files, err := apps.RenderRepo(list, apps.RepoOptions{Path: "apps", RepoURL: "https://git.example/homelab", Revision: "main"})
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if _, err := apps.WriteRepo(dir, "apps", files); err != nil {
				t.Fatal(err)
			}
			read, err := apps.ReadRepoObjects(dir)
			if err != nil {
				t.Fatal(err)
			}
			fromFiles := map[string]any{}
			for _, o := range read {
				if o.GetKind() == "Application" {
					continue // Argo CD's, not the apps'
				}
				fromFiles[TypeToken(o)+"::"+o.GetName()] = normalise(t, o.Object)
			}
			fromPulumi := map[string]any{}
			for _, r := range m.Resources() {
				if !r.Custom || r.Type == "kubernetes:core/v1:Namespace" || !strings.HasPrefix(r.Parent, TypeApp+"::") {
					continue
				}
				obj := plainObject(r)
				if r.Type == "kubernetes:core/v1:Secret" {
					obj = withPlaceholders(obj)
				}
				fromPulumi[r.Key()] = normalise(t, obj)
			}
			if len(fromFiles) == 0 || !reflect.DeepEqual(fromFiles, fromPulumi) {
				t.Errorf("rack render wrote %d objects, Pulumi registers %d:\n%s", len(fromFiles), len(fromPulumi), diffKeys(fromFiles, fromPulumi))
			}
			t.Logf("%d objects, the same from both deliverers", len(fromFiles))
		})
	}
}

func diffKeys(a, b map[string]any) string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			out = append(out, "only in render: "+k)
		} else if !reflect.DeepEqual(v, w) {
			out = append(out, fmt.Sprintf("differs: %s\n  render %v\n  pulumi %v", k, v, w))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, "only in Pulumi: "+k)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func TestSummarise(t *testing.T) {
	engine := errors.New(`pulumi up of stack lab-apps: failed to run update: exit status 1
code: 1
stdout: Updating (lab-apps):
 ...
Diagnostics:
  kubernetes:apps/v1:Deployment (web-green):
    error: 3 errors occurred:
    	* resource "urn:pulumi:lab-apps::rack::rack:apps:App$kubernetes:apps/v1:Deployment::web-green" was successfully created, but the Kubernetes API server reported that it failed to fully initialize or become live: 'web-green' timed out waiting to be Ready
    	* [MinimumReplicasUnavailable] Deployment does not have minimum availability.
    	* Minimum number of live Pods was not attained

  kubernetes:core/v1:Service (web-preview):
    error: 'web-preview' timed out waiting to be Ready

  pulumi:pulumi:Stack (rack-lab-apps):
    error: update failed
`)
	// As the runner returns it: shortened, the engine's account wrapped.
	err := summarise(explain(fmt.Errorf("pulumi up of stack lab-apps: %w", engine), Options{}))
	var f *AppsFailure
	if !errors.As(err, &f) {
		t.Fatalf("%v", err)
	}
	want := []string{
		"Deployment web-green: 'web-green' timed out waiting to be Ready, [MinimumReplicasUnavailable] Deployment does not have minimum availability",
		"Service web-preview: 'web-preview' timed out waiting to be Ready",
	}
	if !slices.Equal(f.Objects, want) || !errors.Is(err, engine) {
		t.Errorf("objects\n%q\nwant\n%q", f.Objects, want)
	}
	if other := errors.New("open stack: no passphrase"); summarise(other) != other {
		t.Error("an error without diagnostics was rewritten")
	}
}

func TestTraefikAddress(t *testing.T) {
	pool := func(addrs ...string) []inventory.IPPool {
		return []inventory.IPPool{{Name: "p", Addresses: addrs}}
	}
	for _, tt := range []struct {
		pools []inventory.IPPool
		want  string
	}{
		{pool("192.168.1.210-192.168.1.250"), "192.168.1.249"},
		{pool("192.168.1.200/29"), "192.168.1.206"}, // Argo CD .207
		{pool("10.0.0.250-10.0.1.1"), "10.0.0.254"}, // Argo CD .1.1; .1.0 and .0.255 skipped
		{pool("192.168.1.240-192.168.1.240"), ""},   // one address: Argo CD's
		{nil, ""},
	} {
		if got := traefikAddress(tt.pools); got != tt.want {
			t.Errorf("traefikAddress(%v) = %q, want %q (Argo CD: %q)", tt.pools, got, tt.want, argoCDAddress(tt.pools))
		}
	}
}

// writeFile is os.WriteFile failing the test.
func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// realApps is a test API server (kwok runs the pods: "Running" without
// running) with Traefik's CRDs and one Node, and an inventory of a canary
// web app and a database with a volume and a secret, its state dir in a
// temporary folder holding the cluster's kubeconfig.
type realApps struct {
	cluster *testcluster.Cluster
	cs      *kubernetes.Clientset
	inv     *inventory.Inventory
	opts    AppsOptions
	home    string
	secret  string
}

func newRealApps(t *testing.T) *realApps {
	t.Helper()
	home := pulumiWithKubernetes(t)
	c := testcluster.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	apptest.Prepare(ctx, t, c)
	cs := c.Clientset()
	// The database's volume: a PersistentVolume waiting for its claim, as
	// a local-volume provisioner would have made it.
	class := &storagev1.StorageClass{ObjectMeta: k8smetav1.ObjectMeta{Name: "rack-test"}, Provisioner: "kubernetes.io/no-provisioner"}
	if _, err := cs.StorageV1().StorageClasses().Create(ctx, class, k8smetav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pv := &k8scorev1.PersistentVolume{
		ObjectMeta: k8smetav1.ObjectMeta{Name: "db-volume"},
		Spec: k8scorev1.PersistentVolumeSpec{
			Capacity:                      k8scorev1.ResourceList{k8scorev1.ResourceStorage: k8sresource.MustParse("1Gi")},
			AccessModes:                   []k8scorev1.PersistentVolumeAccessMode{k8scorev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: k8scorev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "rack-test",
			PersistentVolumeSource:        k8scorev1.PersistentVolumeSource{HostPath: &k8scorev1.HostPathVolumeSource{Path: "/srv/db"}},
			ClaimRef:                      &k8scorev1.ObjectReference{Namespace: apps.DefaultNamespace, Name: "db-data"},
		},
	}
	if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, k8smetav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	secret := "db-pw-" + rand.Text()
	t.Setenv("RACK_TEST_DB_PASSWORD", secret)
	t.Setenv(EnvPassphrase, "")
	inv := parse(`
cluster: {name: lab, k3s: {version: v1.33.5+k3s1}}
ssh: {user: pi}
nodes:
  - {name: kwok-1, address: 10.99.0.1, role: server}
addons:
  traefik: {}
apps:
  - name: web
    image: docker.io/homelab/sampleweb:v1
    port: 8080
    replicas: 2
    expose: {host: web.home.arpa}
    strategy: {type: canary, steps: [10, 50, 100], check: /ready}
  - name: db
    image: postgres:16
    port: 5432
    storage: {size: 1Gi, class: rack-test, path: /var/lib/postgresql/data}
    env:
      POSTGRES_USER: homelab
      POSTGRES_PASSWORD: ${RACK_TEST_DB_PASSWORD}
    strategy: {type: recreate}
`)(t)
	admin, err := os.ReadFile(c.AdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(inv.StateDir(), KubeconfigFile), admin)
	return &realApps{cluster: c, cs: cs, inv: inv, home: home, secret: secret,
		opts: AppsOptions{Options: Options{PulumiHome: home}, ReadyTimeout: 3 * time.Minute}}
}

// up runs rack up's apps phase, logging how long it took.
func (r *realApps) up(t *testing.T, what string) (AppsResult, error) {
	t.Helper()
	var progress testenv.Buffer
	opts := r.opts
	opts.Progress = &progress
	start := time.Now()
	res, err := UpApps(context.Background(), r.inv, opts)
	t.Logf("%s: %v, changes %v", what, time.Since(start).Round(time.Millisecond), res.Changes)
	if err != nil && testing.Verbose() {
		t.Logf("progress:\n%s", progress.String())
	}
	return res, err
}

func (r *realApps) mustUp(t *testing.T, what string) AppsResult {
	t.Helper()
	res, err := r.up(t, what)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return res
}

func (r *realApps) apply(t *testing.T, what string, states map[string]release.State) {
	t.Helper()
	start := time.Now()
	res, err := ApplyReleases(context.Background(), r.inv, states, r.opts)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Logf("%s: %v, changes %v", what, time.Since(start).Round(time.Millisecond), res.Changes)
}

func (r *realApps) saved(t *testing.T) map[string]release.State {
	t.Helper()
	st, err := Releases(context.Background(), r.inv, r.opts)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// weights reads the web TraefikService's weights from the cluster.
func (r *realApps) weights(t *testing.T) map[string]int64 {
	dyn, err := dynamic.NewForConfig(r.cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return apptest.Weights(t, dyn, "web")
}

func (r *realApps) deployments(t *testing.T) []string {
	return apptest.Deployments(t, r.cs, func(image string) string { return image })
}

// TestAppsStackForReal runs the apps stack through rack's runner, the real
// engine and the real kubernetes provider against a real API server: a
// fresh deploy, an image change deploying a canary candidate, a promote, a
// rollback; a run that fails (a candidate that never becomes Available)
// records nothing and moves no traffic; a database leaving the inventory
// keeps its volume; the database password is in a Secret and nowhere in
// plain text in the stack's state.
func TestAppsStackForReal(t *testing.T) {
	r := newRealApps(t)
	ctx := context.Background()
	web := func() *inventory.App { return &r.inv.Apps[0] }

	r.mustUp(t, "fresh deploy")
	if got, want := r.deployments(t), []string{"db=postgres:16", "web-blue=docker.io/homelab/sampleweb:v1"}; !slices.Equal(got, want) {
		t.Fatalf("Deployments %v, want %v", got, want)
	}
	saved := r.saved(t)
	if saved["web"].Stable != "docker.io/homelab/sampleweb:v1" || saved["web"].Colour != apps.Blue || saved["db"].Stable != "postgres:16" {
		t.Fatalf("saved states %+v", saved)
	}
	sec, err := r.cs.CoreV1().Secrets(apps.DefaultNamespace).Get(ctx, "db-env", k8smetav1.GetOptions{})
	if err != nil || string(sec.Data["POSTGRES_PASSWORD"]) != r.secret {
		t.Fatalf("Secret db-env: %v (password delivered: %v)", err, err == nil && string(sec.Data["POSTGRES_PASSWORD"]) == r.secret)
	}
	db, err := r.cs.AppsV1().Deployments(apps.DefaultNamespace).Get(ctx, "db", k8smetav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range db.Spec.Template.Spec.Containers[0].Env {
		if e.Value == r.secret {
			t.Errorf("the Deployment carries %s in plain text", e.Name)
		}
	}

	t.Run("image change deploys a candidate", func(t *testing.T) {
		web().Image = "docker.io/homelab/sampleweb:v2"
		r.mustUp(t, "deploy v2")
		if w := r.weights(t); w["web-blue"] != 90 || w["web-green"] != 10 {
			t.Errorf("weights %v, want the first canary step (90/10)", w)
		}
		st := r.saved(t)["web"]
		if st.Candidate != "docker.io/homelab/sampleweb:v2" || st.Step != 0 {
			t.Errorf("saved %+v, want the candidate at step 0", st)
		}
		// A re-run agrees with the saved state and changes nothing.
		res := r.mustUp(t, "re-run")
		if res.Changes["update"]+res.Changes["create"]+res.Changes["delete"] != 0 {
			t.Errorf("a re-run changed %v", res.Changes)
		}
	})

	t.Run("a promote killed after its early move", func(t *testing.T) {
		// The routes moved, then rack died before the Pulumi update
		// recorded the step: the recorded state still says step 0, and the
		// next rack up puts the routes back where it says.
		states := r.saved(t)
		rel, err := apps.Promote(*web(), states["web"].Release)
		if err != nil {
			t.Fatal(err)
		}
		next := maps.Clone(states)
		next["web"] = release.State{Release: rel}
		admin, err := os.ReadFile(r.cluster.AdminKubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		cs, dyn, err := kubeClients(admin)
		if err != nil {
			t.Fatal(err)
		}
		if moved := flipRoutes(ctx, &release.Gate{Client: cs}, dyn, r.inv, states, next, io.Discard); !slices.Equal(moved, []string{"web"}) {
			t.Fatalf("moved %v, want web", moved)
		}
		if w := r.weights(t); w["web-blue"] != 50 || w["web-green"] != 50 {
			t.Fatalf("weights after the early move %v, want 50/50", w)
		}
		r.mustUp(t, "rack up after the killed promote")
		if w := r.weights(t); w["web-blue"] != 90 || w["web-green"] != 10 {
			t.Errorf("weights %v, want the recorded step back (90/10)", w)
		}
		if st := r.saved(t)["web"]; st.Step != 0 {
			t.Errorf("saved step %d, want 0", st.Step)
		}
	})

	t.Run("promote", func(t *testing.T) {
		// As rack app promote does it: the store reads the states from the
		// stack's checkpoint, moves the traffic, then Pulumi records it.
		var progress testenv.Buffer
		opts := r.opts
		opts.Progress = &progress
		store := &AppsStore{Inventory: r.inv, Options: opts, Delivers: true}
		states, err := store.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if viaCLI := r.saved(t); !reflect.DeepEqual(states, viaCLI) {
			t.Fatalf("states read from the checkpoint %+v, from the stack's outputs %+v", states, viaCLI)
		}
		rel, err := apps.Promote(*web(), states["web"].Release)
		if err != nil {
			t.Fatal(err)
		}
		states["web"] = release.State{Release: rel}
		start := time.Now()
		if err := store.Apply(ctx, states); err != nil {
			t.Fatalf("promote: %v\n%s", err, progress.String())
		}
		t.Logf("promote: %v", time.Since(start).Round(time.Millisecond))
		if !strings.Contains(progress.String(), "web: traffic moved ahead of the Pulumi update") {
			t.Errorf("the promote did not move the traffic first:\n%s", progress.String())
		}
		if w := r.weights(t); w["web-blue"] != 50 || w["web-green"] != 50 {
			t.Errorf("weights %v, want 50/50", w)
		}
		if got := r.saved(t)["web"].Step; got != 1 {
			t.Errorf("saved step %d, want 1", got)
		}
		// The routes stay Pulumi's alone: one field manager applies them,
		// and the next run finds nothing to change.
		for _, gvr := range []schema.GroupVersionResource{
			{Group: "traefik.io", Version: "v1alpha1", Resource: "traefikservices"},
			{Group: "traefik.io", Version: "v1alpha1", Resource: "ingressroutes"},
		} {
			dyn, err := dynamic.NewForConfig(r.cluster.RESTConfig())
			if err != nil {
				t.Fatal(err)
			}
			obj, err := dyn.Resource(gvr).Namespace(apps.DefaultNamespace).Get(ctx, "web", k8smetav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var appliers []string
			for _, f := range obj.GetManagedFields() {
				if f.Operation == k8smetav1.ManagedFieldsOperationApply {
					appliers = append(appliers, f.Manager)
				}
			}
			if len(appliers) != 1 || !strings.HasPrefix(appliers[0], pulumiManagerPrefix) {
				t.Errorf("%s web is applied by %v, want Pulumi's field manager only", gvr.Resource, appliers)
			}
		}
		if res := r.mustUp(t, "re-run after the promote"); res.Changes["update"]+res.Changes["create"]+res.Changes["delete"] != 0 {
			t.Errorf("a re-run after the promote changed %v", res.Changes)
		}
	})

	t.Run("rollback", func(t *testing.T) {
		states := r.saved(t)
		rel, err := apps.Rollback(*web(), states["web"].Release)
		if err != nil {
			t.Fatal(err)
		}
		states["web"] = release.State{Release: rel}
		r.apply(t, "rollback", states)
		if w := r.weights(t); len(w) != 1 || w["web-blue"] != 100 {
			t.Errorf("weights %v, want everything on blue", w)
		}
		if got, want := r.deployments(t), []string{"db=postgres:16", "web-blue=docker.io/homelab/sampleweb:v1"}; !slices.Equal(got, want) {
			t.Errorf("Deployments %v, want the candidate removed: %v", got, want)
		}
		// The inventory still names v2: rack up does not start it again.
		res := r.mustUp(t, "re-run after rollback")
		if n := res.Changes["create"]; n != 0 {
			t.Errorf("rack up after a rollback created %d resources", n)
		}
	})

	t.Run("a failed run records nothing and moves no traffic", func(t *testing.T) {
		node, err := r.cs.CoreV1().Nodes().Get(ctx, "kwok-1", k8smetav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		node.Spec.Unschedulable = true
		if _, err := r.cs.CoreV1().Nodes().Update(ctx, node, k8smetav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer func() {
			node, _ := r.cs.CoreV1().Nodes().Get(ctx, "kwok-1", k8smetav1.GetOptions{})
			node.Spec.Unschedulable = false
			if _, err := r.cs.CoreV1().Nodes().Update(ctx, node, k8smetav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}()
		before := r.saved(t)
		web().Image = "docker.io/homelab/sampleweb:v3"
		opts := r.opts
		r.opts.ReadyTimeout = 20 * time.Second
		_, err = r.up(t, "deploy a v3 that never becomes Available")
		r.opts = opts
		if err == nil {
			t.Fatal("rack up succeeded although the candidate's pods cannot be scheduled")
		}
		var failure *AppsFailure
		if !errors.As(err, &failure) || !strings.Contains(err.Error(), "Deployment web-green: 'web-green' timed out waiting to be Ready") {
			t.Errorf("the failure does not name the object and why: %v", err)
		}
		t.Logf("rack up failed as it should: %v", err)
		if after := r.saved(t); !reflect.DeepEqual(after, before) {
			t.Errorf("the failed run recorded %+v over %+v", after, before)
		}
		if w := r.weights(t); len(w) != 1 || w["web-blue"] != 100 {
			t.Errorf("weights %v: the failed run moved traffic to a candidate that is not Available", w)
		}
		// rack app rollback after such a run: the image is marked rolled
		// back, and what the run left of it is removed.
		states := r.saved(t)
		w := states["web"]
		w.RolledBack = web().Image
		states["web"] = w
		r.apply(t, "roll back the failed deploy", states)
		if got, want := r.deployments(t), []string{"db=postgres:16", "web-blue=docker.io/homelab/sampleweb:v1"}; !slices.Equal(got, want) {
			t.Errorf("Deployments %v, want what the failed run left removed: %v", got, want)
		}
	})

	t.Run("a database leaving the inventory keeps its volume", func(t *testing.T) {
		web().Image = "docker.io/homelab/sampleweb:v1"
		r.inv.Apps = r.inv.Apps[:1]
		r.mustUp(t, "without db")
		if _, err := r.cs.AppsV1().Deployments(apps.DefaultNamespace).Get(ctx, "db", k8smetav1.GetOptions{}); err == nil {
			t.Error("the db Deployment is still there")
		}
		pvc, err := r.cs.CoreV1().PersistentVolumeClaims(apps.DefaultNamespace).Get(ctx, "db-data", k8smetav1.GetOptions{})
		if err != nil || pvc.DeletionTimestamp != nil {
			t.Fatalf("the database's claim was deleted with the app: %v", err)
		}
		if _, ok := r.saved(t)["db"]; ok {
			t.Error("the state of a removed app is still recorded")
		}
	})

	checkNoPlaintext(t, r.inv.StateDir(), map[string]string{"database password": r.secret})
}
