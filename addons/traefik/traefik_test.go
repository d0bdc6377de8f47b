package traefik_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/santhosh-tekuri/jsonschema/v5"
	"gopkg.in/yaml.v3"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/addons/charts"
	"github.com/homelab/rack/addons/traefik"
	"github.com/homelab/rack/apps/release"
)

const (
	typComponent = "rack:addons:Traefik"
	typNamespace = "kubernetes:core/v1:Namespace"
	typRelease   = "kubernetes:helm.sh/v3:Release"
)

func run(t *testing.T, args *traefik.TraefikArgs) (*addontest.Mocks, string) {
	t.Helper()
	var addr string
	m := addontest.MustRun(t, func(ctx *pulumi.Context) error {
		c, err := traefik.NewTraefik(ctx, "traefik", args)
		if err != nil {
			return err
		}
		c.Address.ApplyT(func(a string) error { addr = a; return nil })
		return nil
	})
	return m, addr
}

func TestTraefik(t *testing.T) {
	for _, tt := range []struct {
		name     string
		args     *traefik.TraefikArgs
		chart    string // what the release installs
		repo     string
		lbIP     string
		wantAddr string
	}{
		{"pinned upstream chart", &traefik.TraefikArgs{}, "traefik", "https://traefik.github.io/charts", "", ""},
		{"chart mirror, fixed address", &traefik.TraefikArgs{Chart: "/srv/charts/traefik-39.0.9.tgz", LoadBalancerIP: "192.168.1.249"},
			"/srv/charts/traefik-39.0.9.tgz", "", "192.168.1.249", "http://192.168.1.249"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, addr := run(t, tt.args)
			m.Component(t, typComponent, "traefik")
			ns, ok := m.Find(typNamespace, "traefik")
			if !ok || ns.Field("metadata.name") != traefik.DefaultNamespace {
				t.Fatalf("namespace %v", ns.Field("metadata.name"))
			}
			rel, ok := m.Find(typRelease, "traefik")
			if !ok {
				t.Fatal("no helm release")
			}
			if rel.Field("chart") != tt.chart || rel.Field("namespace") != traefik.DefaultNamespace || rel.Field("name") != "traefik" {
				t.Errorf("release of chart %v in %v named %v", rel.Field("chart"), rel.Field("namespace"), rel.Field("name"))
			}
			if tt.repo != "" && (rel.Field("version") != traefik.ChartVersion || rel.Field("repositoryOpts.repo") != tt.repo) {
				t.Errorf("release %v from %v, want %s from %s", rel.Field("version"), rel.Field("repositoryOpts.repo"), traefik.ChartVersion, tt.repo)
			}
			for path, want := range map[string]any{
				"values.providers.kubernetesCRD.enabled":            true,
				"values.providers.kubernetesCRD.allowEmptyServices": true,
				"values.api.dashboard":                              false,
				"values.ingressRoute.dashboard.enabled":             false,
				"values.service.type":                               "LoadBalancer",
				"values.fullnameOverride":                           release.TraefikService,
				"values.podDisruptionBudget.enabled":                true,
			} {
				if got := rel.Field(path); got != want {
					t.Errorf("%s = %v, want %v", path, got, want)
				}
			}
			if args, _ := rel.Field("values.additionalArguments").([]any); len(args) != 1 || args[0] != "--providers.providersThrottleDuration=200ms" {
				t.Errorf("additionalArguments %v, want Traefik's provider throttle at 200ms", args)
			}
			ann, _ := rel.Field("values.service.annotations").(map[string]any)
			if got, _ := ann["metallb.io/loadBalancerIPs"].(string); got != tt.lbIP {
				t.Errorf("MetalLB address annotation %q, want %q", got, tt.lbIP)
			}
			if addr != tt.wantAddr {
				t.Errorf("address %q, want %q", addr, tt.wantAddr)
			}
		})
	}
	t.Run("bad address", func(t *testing.T) {
		_, err := addontest.Run(func(ctx *pulumi.Context) error {
			_, err := traefik.NewTraefik(ctx, "traefik", &traefik.TraefikArgs{LoadBalancerIP: "not-an-ip"})
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "not an IP address") {
			t.Errorf("error %v", err)
		}
	})
}

// TestNamesAgree: the gates (apps/release, free of Pulumi) find Traefik
// where this addon puts it, and the pinned chart is one.
func TestNamesAgree(t *testing.T) {
	if release.TraefikNamespace != traefik.DefaultNamespace || release.TraefikService != traefik.ServiceName || release.TraefikPort != traefik.WebPort {
		t.Errorf("apps/release looks for %s/%s port %s, the addon runs %s/%s port %s",
			release.TraefikNamespace, release.TraefikService, release.TraefikPort, traefik.DefaultNamespace, traefik.ServiceName, traefik.WebPort)
	}
	if charts.Traefik.Version != traefik.ChartVersion {
		t.Errorf("charts.Traefik pins %s, the addon %s", charts.Traefik.Version, traefik.ChartVersion)
	}
}

// TestValuesAgainstTheChart: rack's values pass the pinned chart's own
// values.schema.json (which refuses unknown keys), and the chart is the
// Traefik rack pins.
func TestValuesAgainstTheChart(t *testing.T) {
	archive := filepath.Join(addontest.ChartsDir(t), charts.Traefik.File())
	files := readChart(t, archive, "values.schema.json", "Chart.yaml", "values.yaml")
	var meta struct {
		Version    string `yaml:"version"`
		AppVersion string `yaml:"appVersion"`
	}
	if err := yaml.Unmarshal(files["Chart.yaml"], &meta); err != nil {
		t.Fatal(err)
	}
	if meta.Version != traefik.ChartVersion || meta.AppVersion != traefik.TraefikVersion {
		t.Fatalf("%s is chart %s of Traefik %s, want %s of %s", archive, meta.Version, meta.AppVersion, traefik.ChartVersion, traefik.TraefikVersion)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("values.schema.json", bytes.NewReader(files["values.schema.json"])); err != nil {
		t.Fatal(err)
	}
	schema, err := c.Compile("values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	// The chart's defaults with rack's values over them, as Helm merges.
	var defaults map[string]any
	if err := yaml.Unmarshal(files["values.yaml"], &defaults); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"", "192.168.1.249"} {
		m := addontest.MustRun(t, func(ctx *pulumi.Context) error {
			_, err := traefik.NewTraefik(ctx, "traefik", &traefik.TraefikArgs{LoadBalancerIP: ip})
			return err
		})
		rel, _ := m.Find(typRelease, "traefik")
		values, _ := rel.Field("values").(map[string]any)
		merged := merge(clone(t, defaults), values)
		if err := schema.Validate(merged); err != nil {
			t.Errorf("the chart's schema refuses rack's values (address %q): %v", ip, err)
		}
		// A misspelt key must be refused: the check has teeth.
		values["provider"] = map[string]any{"kubernetesCRD": map[string]any{"enabled": true}}
		if err := schema.Validate(merge(clone(t, defaults), values)); err == nil {
			t.Error("the schema accepts an unknown key: the check proves nothing")
		}
	}
}

// readChart returns the named files of the packaged chart (paths inside the
// chart), unpacked the way rack unpacks a chart.
func readChart(t *testing.T, archive string, names ...string) map[string][]byte {
	t.Helper()
	dir := t.TempDir()
	if err := charts.Unpack(archive, dir); err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatalf("%s: %v", archive, err)
		}
		out[n] = b
	}
	return out
}

// clone makes a YAML-decoded value JSON-shaped (what the schema validator takes).
func clone(t *testing.T, v map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// merge lays over onto base, maps key by key, as Helm merges values.
func merge(base, over map[string]any) map[string]any {
	for k, v := range over {
		if vm, ok := v.(map[string]any); ok {
			if bm, ok := base[k].(map[string]any); ok {
				base[k] = merge(bm, vm)
				continue
			}
		}
		base[k] = v
	}
	return base
}
