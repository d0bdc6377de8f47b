package charts_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/addons/argocd"
	"github.com/homelab/rack/addons/charts"
	"github.com/homelab/rack/addons/longhorn"
	"github.com/homelab/rack/addons/metallb"
)

var (
	metalLB  = charts.Pinned{Name: "metallb", Repo: metallb.ChartRepo, Version: metallb.ChartVersion}
	longHorn = charts.Pinned{Name: "longhorn", Repo: longhorn.ChartRepo, Version: longhorn.ChartVersion}
	argoCD   = charts.Pinned{Name: "argo-cd", Repo: argocd.ChartRepo, Version: argocd.ChartVersion}
)

func TestPullCommand(t *testing.T) {
	got := argoCD.PullCommand("/srv/charts")
	want := "helm pull argo-cd --repo https://argoproj.github.io/argo-helm --version 10.1.1 -d /srv/charts"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if f := charts.Traefik.File(); f != "traefik-39.0.9.tgz" {
		t.Errorf("Traefik.File() = %s", f)
	}
}

// TestInspectUpstream reads the real packaged charts at the pinned versions.
func TestInspectUpstream(t *testing.T) {
	dir := addontest.ChartsDir(t)
	for _, p := range []charts.Pinned{metalLB, longHorn, argoCD, charts.Traefik} {
		m, err := charts.Inspect(filepath.Join(dir, p.File()))
		if err != nil {
			t.Fatalf("%s: %v", p.File(), err)
		}
		if m.Name != p.Name || m.Version != p.Version || len(m.Missing) > 0 {
			t.Errorf("%s: %+v, want %s %s with every dependency", p.File(), m, p.Name, p.Version)
		}
	}
}

// TestCheck: a mirror with every chart passes; one without a chart names
// it with the exact helm pull command; a checkout of the argo-cd chart
// folder (redis-ha not vendored) is refused before anything is installed.
func TestCheck(t *testing.T) {
	upstream := addontest.ChartsDir(t)
	needs := []charts.Need{
		{Key: "addons.metallb", Where: "rack.yaml:40", Pinned: metalLB},
		{Key: "addons.longhorn", Where: "rack.yaml:44", Pinned: longHorn},
		{Key: "addons.argocd", Where: "rack.yaml:50", Pinned: argoCD},
		{Key: "addons.traefik", Where: "rack.yaml:48", Pinned: charts.Traefik},
	}

	t.Run("complete mirror", func(t *testing.T) {
		warnings, err := charts.Check(needs, upstream, "addons.chartMirror")
		if err != nil || len(warnings) > 0 {
			t.Fatalf("Check(%s) = %v, %v", upstream, warnings, err)
		}
	})

	t.Run("no mirror: the repositories", func(t *testing.T) {
		if _, err := charts.Check(needs, "", ""); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("chart missing from the mirror", func(t *testing.T) {
		mirror := t.TempDir()
		for _, f := range []string{metalLB.File(), argoCD.File(), charts.Traefik.File()} {
			link(t, filepath.Join(upstream, f), filepath.Join(mirror, f))
		}
		_, err := charts.Check(needs, mirror, "$RACK_CHART_MIRROR")
		if err == nil {
			t.Fatal("a mirror without longhorn passed")
		}
		want := "rack.yaml:44: addons.longhorn: chart longhorn 1.12.1 is not in the chart mirror " + mirror +
			" ($RACK_CHART_MIRROR): fetch it on a connected machine with `helm pull longhorn --repo https://charts.longhorn.io --version 1.12.1 -d " + mirror + "`"
		if err.Error() != want {
			t.Errorf("error\n got %v\nwant %s", err, want)
		}
	})

	t.Run("mirror folder missing", func(t *testing.T) {
		mirror := filepath.Join(t.TempDir(), "charts")
		_, err := charts.Check(needs, mirror, "rack.yaml:3: addons.chartMirror")
		if err == nil || !strings.Contains(err.Error(), "is not a folder") ||
			!strings.Contains(err.Error(), "helm pull metallb --repo https://metallb.github.io/metallb --version 0.16.2 -d "+mirror) {
			t.Fatalf("error %v", err)
		}
	})

	t.Run("wrong version in the mirror", func(t *testing.T) {
		mirror := t.TempDir()
		for _, n := range needs {
			link(t, filepath.Join(upstream, n.Pinned.File()), filepath.Join(mirror, n.Pinned.File()))
		}
		// traefik-41.3.0 renamed as the pinned 39.0.9.
		if err := os.Remove(filepath.Join(mirror, charts.Traefik.File())); err != nil {
			t.Fatal(err)
		}
		link(t, filepath.Join(upstream, "traefik-41.3.0.tgz"), filepath.Join(mirror, charts.Traefik.File()))
		_, err := charts.Check(needs, mirror, "addons.chartMirror")
		if err == nil || !strings.Contains(err.Error(), "holds traefik 41.3.0, not 39.0.9") {
			t.Fatalf("error %v", err)
		}
	})

	t.Run("argo-cd chart folder without redis-ha", func(t *testing.T) {
		// A plain checkout of argo-helm's charts/argo-cd: Chart.yaml lists
		// redis-ha, charts/ does not hold it.
		dir := t.TempDir()
		if err := charts.Unpack(filepath.Join(upstream, argoCD.File()), dir); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(dir, "charts")); err != nil {
			t.Fatal(err)
		}
		m, err := charts.Inspect(dir)
		if err != nil || !slices.Equal(m.Missing, []string{"redis-ha 4.38.0"}) {
			t.Fatalf("Inspect(%s) = %+v, %v; want redis-ha missing", dir, m, err)
		}
		n := needs[2]
		n.Override = dir
		_, err = charts.Check([]charts.Need{n}, "", "")
		for _, want := range []string{"redis-ha 4.38.0", "helm dependency build " + dir, "helm pull argo-cd --repo https://argoproj.github.io/argo-helm --version 10.1.1"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v, want it to say %q", err, want)
			}
		}
		// The same folder with its dependency vendored is fine.
		complete := t.TempDir()
		if err := charts.Unpack(filepath.Join(upstream, argoCD.File()), complete); err != nil {
			t.Fatal(err)
		}
		n.Override = complete
		if _, err := charts.Check([]charts.Need{n}, "", ""); err != nil {
			t.Errorf("complete folder: %v", err)
		}
	})

	t.Run("override: wrong chart, other version, missing file", func(t *testing.T) {
		n := needs[0]
		n.Override = filepath.Join(upstream, longHorn.File())
		if _, err := charts.Check([]charts.Need{n}, "", ""); err == nil || !strings.Contains(err.Error(), `is the chart "longhorn", not metallb`) {
			t.Errorf("wrong chart: %v", err)
		}
		n = needs[3]
		n.Override = filepath.Join(upstream, "traefik-41.3.0.tgz")
		warnings, err := charts.Check([]charts.Need{n}, upstream, "addons.chartMirror")
		if err != nil || len(warnings) != 1 || !strings.Contains(warnings[0], "traefik 41.3.0; rack is tested with 39.0.9") {
			t.Errorf("other version: %v, %v", warnings, err)
		}
		n.Override = filepath.Join(t.TempDir(), "traefik.tgz")
		if _, err := charts.Check([]charts.Need{n}, "", ""); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("missing file: %v", err)
		}
		// oci:// references are Helm's to fetch.
		n.Override = "oci://registry.lan/charts/traefik"
		if _, err := charts.Check([]charts.Need{n}, "", ""); err != nil {
			t.Errorf("oci: %v", err)
		}
	})

	t.Run("not a chart", func(t *testing.T) {
		mirror := t.TempDir()
		if err := os.WriteFile(filepath.Join(mirror, metalLB.File()), []byte("<html>404</html>"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := charts.Check(needs[:1], mirror, "addons.chartMirror")
		if err == nil || !strings.Contains(err.Error(), "not a packaged chart") || !strings.Contains(err.Error(), "helm pull metallb") {
			t.Fatalf("error %v", err)
		}
	})
}

func link(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Symlink(from, to); err != nil {
		t.Fatal(err)
	}
}
