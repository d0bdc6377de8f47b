package stacks

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/internal/testenv"
)

const mirrorInventory = edgeNodes + `addons:
  chartMirror: charts
  metallb:
    pools: [{name: p, addresses: [10.0.1.10-10.0.1.20]}]
  longhorn: {chart: own/longhorn.tgz, replicas: 1}
  argocd: {repo: "https://git.lan/gitops.git"}
  traefik: {}
`

// TestChartMirror: the charts come from the mirror's <name>-<version>.tgz
// (relative to the inventory, or $RACK_CHART_MIRROR), an addon's own chart
// first; the program installs exactly those files.
func TestChartMirror(t *testing.T) {
	t.Setenv(EnvChartMirror, "")
	inv := parse(mirrorInventory)(t)
	dir := mustAbs(t, inv.Dir())
	mirror, from := ChartMirror(inv)
	if mirror != filepath.Join(dir, "charts") || !strings.HasSuffix(from, "rack.yaml:8: addons.chartMirror") {
		t.Errorf("ChartMirror = %s (%s)", mirror, from)
	}
	want := map[string]string{
		"addons.metallb":  filepath.Join(dir, "charts", "metallb-0.16.2.tgz"),
		"addons.longhorn": filepath.Join(dir, "own", "longhorn.tgz"),
		"addons.argocd":   filepath.Join(dir, "charts", "argo-cd-10.1.1.tgz"),
		"addons.traefik":  filepath.Join(dir, "charts", "traefik-39.0.9.tgz"),
	}
	for key, w := range want {
		if got := ChartSource(inv, key); got != w {
			t.Errorf("ChartSource(%s) = %s, want %s", key, got, w)
		}
	}
	m, _ := runProgram(t, inv)
	for _, rel := range m.OfType(typRelease) {
		if w := want["addons."+rel.Name]; rel.Field("chart") != w || rel.Field("version") != nil || rel.Field("repositoryOpts") != nil {
			t.Errorf("release %s: chart %v version %v repo %v, want the local %s", rel.Name, rel.Field("chart"), rel.Field("version"), rel.Field("repositoryOpts"), w)
		}
	}

	t.Setenv(EnvChartMirror, "/srv/charts")
	if m, from := ChartMirror(inv); m != "/srv/charts" || from != "$RACK_CHART_MIRROR" {
		t.Errorf("with %s: %s (%s)", EnvChartMirror, m, from)
	}
	if got := ChartSource(inv, "addons.argocd"); got != "/srv/charts/argo-cd-10.1.1.tgz" {
		t.Errorf("ChartSource with %s: %s", EnvChartMirror, got)
	}
}

// TestCheckCharts against the upstream charts: a complete mirror passes;
// one chart short, the error names the inventory line and the helm pull
// command; rack.yaml's addons are all in the test machines' mirror.
func TestCheckCharts(t *testing.T) {
	upstream := addontest.ChartsDir(t)
	t.Setenv(EnvChartMirror, "")
	inv := parse(strings.Replace(mirrorInventory, "longhorn: {chart: own/longhorn.tgz, replicas: 1}", "longhorn: {replicas: 1}", 1))(t)
	mirror := filepath.Join(inv.Dir(), "charts")
	if err := os.MkdirAll(mirror, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"metallb-0.16.2.tgz", "argo-cd-10.1.1.tgz", "traefik-39.0.9.tgz"} {
		if err := os.Symlink(filepath.Join(upstream, f), filepath.Join(mirror, f)); err != nil {
			t.Fatal(err)
		}
	}
	var w testenv.Buffer
	err := CheckCharts(inv, &w)
	want := inv.File + ":11: addons.longhorn: chart longhorn 1.12.1 is not in the chart mirror " + mustAbs(t, mirror) +
		" (" + inv.File + ":8: addons.chartMirror): fetch it on a connected machine with `helm pull longhorn --repo https://charts.longhorn.io --version 1.12.1 -d " + mustAbs(t, mirror) + "`"
	if err == nil || err.Error() != want {
		t.Errorf("CheckCharts:\n got %v\nwant %s", err, want)
	}
	if err := os.Symlink(filepath.Join(upstream, "longhorn-1.12.1.tgz"), filepath.Join(mirror, "longhorn-1.12.1.tgz")); err != nil {
		t.Fatal(err)
	}
	if err := CheckCharts(inv, &w); err != nil {
		t.Errorf("complete mirror: %v", err)
	}

	// The example rack, airgapped with the test machines' mirror.
	t.Setenv(EnvChartMirror, upstream)
	rack := loadFile("../inventory/rack.yaml")(t)
	if err := CheckCharts(rack, &w); err != nil {
		t.Errorf("rack.yaml with %s=%s: %v", EnvChartMirror, upstream, err)
	}
	if w.String() != "" {
		t.Errorf("warnings: %s", w.String())
	}
}

// TestChartsUnpacked: before a run, each packaged chart is unpacked into the
// state dir and installed from there, so Helm leaves out what the chart's
// .helmignore lists (Traefik's archive in the test mirror carries
// crds/kustomization.yaml, which Helm would install as a CRD); an unchanged
// archive is not unpacked again, a changed one is.
func TestChartsUnpacked(t *testing.T) {
	upstream := addontest.ChartsDir(t)
	mirror := t.TempDir()
	for _, f := range []string{"traefik-39.0.9.tgz", "metallb-0.16.2.tgz", "argo-cd-10.1.1.tgz", "longhorn-1.12.1.tgz"} {
		b, err := os.ReadFile(filepath.Join(upstream, f))
		if err != nil {
			t.Fatal(err)
		}
		platWrite(t, filepath.Join(mirror, f), b)
	}
	t.Setenv(EnvChartMirror, mirror)
	inv := parse(strings.Replace(mirrorInventory, "{chart: own/longhorn.tgz, replicas: 1}", "{replicas: 1}", 1))(t)
	if got := ChartSource(inv, "addons.traefik"); got != filepath.Join(mirror, "traefik-39.0.9.tgz") {
		t.Errorf("before the check: %s", got)
	}
	if err := CheckCharts(inv, &testenv.Buffer{}); err != nil {
		t.Fatal(err)
	}
	dir := ChartSource(inv, "addons.traefik")
	if !filepath.IsAbs(dir) || !strings.HasPrefix(dir, mustAbs(t, filepath.Join(inv.StateDir(), "charts"))+string(filepath.Separator)) {
		t.Fatalf("traefik installs from %s, want a folder in the state dir", dir)
	}
	ignore, err := os.ReadFile(filepath.Join(dir, ".helmignore"))
	if err != nil || !strings.Contains(string(ignore), "crds/kustomization.yaml") {
		t.Errorf("the unpacked chart's .helmignore: %q %v", ignore, err)
	}
	for _, f := range []string{"Chart.yaml", "values.yaml", "crds/traefik.io_ingressroutes.yaml"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("unpacked chart: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(ChartSource(inv, "addons.argocd"), "charts", "redis-ha", "Chart.yaml")); err != nil {
		t.Errorf("Argo CD's dependency did not come along: %v", err)
	}
	// Unchanged: the same folder, not unpacked again.
	marker := filepath.Join(dir, "rack-test-marker")
	platWrite(t, marker, nil)
	if err := CheckCharts(inv, &testenv.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Error("an unchanged archive was unpacked again")
	}
	// Another archive under the same name is refused by the check, and
	// never installed from the old folder.
	b, _ := os.ReadFile(filepath.Join(upstream, "traefik-41.3.0.tgz"))
	platWrite(t, filepath.Join(mirror, "traefik-39.0.9.tgz"), b)
	if err := CheckCharts(inv, &testenv.Buffer{}); err == nil || !strings.Contains(err.Error(), "41.3.0") {
		t.Errorf("a 41.3.0 archive named traefik-39.0.9.tgz: %v", err)
	}
	if got := ChartSource(inv, "addons.traefik"); got == dir {
		t.Errorf("a changed archive still installs from %s", dir)
	}
}
