package stacks

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/homelab/rack/addons/argocd"
	"github.com/homelab/rack/addons/charts"
	"github.com/homelab/rack/addons/longhorn"
	"github.com/homelab/rack/addons/metallb"
	"github.com/homelab/rack/inventory"
)

// EnvChartMirror overrides addons.chartMirror: a folder of
// <chart>-<version>.tgz the charts are installed from.
const EnvChartMirror = "RACK_CHART_MIRROR"

// The pinned charts, by addon.
var (
	metalLBChart  = charts.Pinned{Name: "metallb", Repo: metallb.ChartRepo, Version: metallb.ChartVersion}
	longhornChart = charts.Pinned{Name: "longhorn", Repo: longhorn.ChartRepo, Version: longhorn.ChartVersion}
	argoCDChart   = charts.Pinned{Name: "argo-cd", Repo: argocd.ChartRepo, Version: argocd.ChartVersion}
)

// ChartMirror returns the chart mirror folder (absolute) and where it was
// set, for messages: $RACK_CHART_MIRROR (relative to the working
// directory), else addons.chartMirror (relative to the inventory's folder).
// Empty: the charts come from their repositories.
func ChartMirror(inv *inventory.Inventory) (dir, from string) {
	if env := os.Getenv(EnvChartMirror); env != "" {
		abs, err := filepath.Abs(env)
		if err != nil {
			abs = env
		}
		return abs, "$" + EnvChartMirror
	}
	if m := inv.Addons.ChartMirror; m != "" {
		return localPath(inv, m), inv.Where("addons.chartMirror") + ": addons.chartMirror"
	}
	return "", ""
}

// chartNeeds lists the charts the inventory's addons install.
func chartNeeds(inv *inventory.Inventory) []charts.Need {
	a := inv.Addons
	var needs []charts.Need
	add := func(key string, p charts.Pinned, override string) {
		needs = append(needs, charts.Need{Key: key, Where: inv.Where(key), Pinned: p, Override: chartPath(inv, override)})
	}
	if a.MetalLB != nil {
		add("addons.metallb", metalLBChart, a.MetalLB.Chart)
	}
	if a.Longhorn != nil {
		add("addons.longhorn", longhornChart, a.Longhorn.Chart)
	}
	if a.ArgoCD != nil {
		add("addons.argocd", argoCDChart, a.ArgoCD.Chart)
	}
	if a.Traefik != nil {
		add("addons.traefik", charts.Traefik, a.Traefik.Chart)
	}
	return needs
}

// ChartSource is where the addon at key (addons.metallb, addons.traefik…)
// installs its chart from: its own chart override, else the mirror's
// archive, else "" for the pinned repository. Components take it as Chart.
func ChartSource(inv *inventory.Inventory, key string) string {
	mirror, _ := ChartMirror(inv)
	for _, n := range chartNeeds(inv) {
		if n.Key == key {
			src := n.Source(mirror)
			if dir, ok := unpacked(inv, src); ok {
				return dir
			}
			return src
		}
	}
	return ""
}

// A packaged chart is installed from a folder rack unpacks it into, under
// the state dir. Helm loads a folder the way `helm package` packs one,
// leaving out what the chart's .helmignore lists, but takes every file of
// an archive. An archive made from a chart's git folder rather than by
// helm package can carry such files: Traefik's crds/kustomization.yaml,
// which Helm would then try to install as a CRD, and fail.
const chartsSubdir = "charts"

// unpackedDir is where the archive at src is unpacked, keyed by its
// content, so a changed archive is unpacked anew.
func unpackedDir(inv *inventory.Inventory, src string) (string, error) {
	f, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	name := strings.TrimSuffix(filepath.Base(src), ".tgz") + "-" + hex.EncodeToString(h.Sum(nil))[:12]
	// Absolute: Helm is handed it from the provider's working directory.
	return filepath.Abs(filepath.Join(inv.StateDir(), chartsSubdir, name))
}

// unpacked is the folder a packaged chart was unpacked into by
// unpackCharts, when src is such an archive and the folder is there.
func unpacked(inv *inventory.Inventory, src string) (string, bool) {
	if !strings.HasSuffix(src, ".tgz") {
		return "", false
	}
	dir, err := unpackedDir(inv, src)
	if err != nil {
		return "", false
	}
	if _, err := os.Stat(filepath.Join(dir, "Chart.yaml")); err != nil {
		return "", false
	}
	return dir, true
}

// unpackCharts unpacks every packaged chart the addons install from (the
// mirror's archives, or a .tgz override) into the state dir, once: into a
// temporary folder renamed into place, so a folder that exists is whole.
func unpackCharts(inv *inventory.Inventory) error {
	mirror, _ := ChartMirror(inv)
	for _, n := range chartNeeds(inv) {
		src := n.Source(mirror)
		if !strings.HasSuffix(src, ".tgz") {
			continue
		}
		if _, ok := unpacked(inv, src); ok {
			continue
		}
		dir, err := unpackedDir(inv, src)
		if err != nil {
			return fmt.Errorf("%s: chart %s: %w", n.Where, src, err)
		}
		if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
			return err
		}
		tmp, err := os.MkdirTemp(filepath.Dir(dir), ".unpack-")
		if err != nil {
			return err
		}
		if err := charts.Unpack(src, tmp); err != nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("%s: chart %s: %w", n.Where, src, err)
		}
		os.RemoveAll(dir) // a folder without Chart.yaml: an older, broken attempt
		if err := os.Rename(tmp, dir); err != nil {
			os.RemoveAll(tmp)
			return err
		}
	}
	return nil
}

// CheckCharts verifies, before anything changes, that every chart the
// inventory's addons install is at hand: in the chart mirror (when there
// is one) at the pinned version, or at the addon's own override. A
// missing chart is named with the `helm pull` command that fetches it.
// Warnings go to w.
func CheckCharts(inv *inventory.Inventory, w io.Writer) error {
	mirror, from := ChartMirror(inv)
	warnings, err := charts.Check(chartNeeds(inv), mirror, from)
	for _, msg := range warnings {
		fmt.Fprintln(w, "warning:", msg)
	}
	if err != nil {
		return err
	}
	return unpackCharts(inv)
}

// chartPath resolves a relative chart path against the inventory's folder,
// where the user wrote it; oci:// references pass through.
func chartPath(inv *inventory.Inventory, chart string) string {
	if chart == "" || charts.IsRemote(chart) {
		return chart
	}
	return localPath(inv, chart)
}

func localPath(inv *inventory.Inventory, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	dir, err := filepath.Abs(inv.Dir())
	if err != nil {
		return p // the check reports the relative path
	}
	return filepath.Join(dir, p)
}
