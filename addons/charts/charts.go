// Package charts knows where an addon's Helm chart comes from: the pinned
// upstream repository, a chart mirror (a folder of <name>-<version>.tgz as
// `helm pull` makes them, for airgapped racks), or an addon's own override
// (a packaged chart, a chart folder, or an oci:// reference). It checks a
// local chart before anything is installed from it, so that a missing or
// incomplete chart is reported with the command that fetches it instead of
// failing halfway through `rack up`.
package charts

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// Pinned is a chart in an upstream Helm repository at an exact version.
type Pinned struct {
	Name    string // chart name in the repository, e.g. metallb
	Repo    string // repository URL
	Version string // exact chart version
}

// Traefik is the Traefik chart rack pins (Traefik v3.6.15): the newest
// whose Traefik can be built from source on the test rack.
var Traefik = Pinned{Name: "traefik", Repo: "https://traefik.github.io/charts", Version: "39.0.9"}

// File is the archive `helm pull` writes for this chart: <name>-<version>.tgz.
func (p Pinned) File() string { return p.Name + "-" + p.Version + ".tgz" }

// PullCommand is the helm command that fetches this chart into dir.
func (p Pinned) PullCommand(dir string) string {
	cmd := fmt.Sprintf("helm pull %s --repo %s --version %s", p.Name, p.Repo, p.Version)
	if dir != "" {
		cmd += " -d " + dir
	}
	return cmd
}

// IsRemote reports whether a chart reference names a registry rather than
// a local file or folder.
func IsRemote(ref string) bool { return strings.Contains(ref, "://") }

// Ref is what a Helm release is told about its chart: Chart alone is a
// local archive or folder; with Version, a chart in Repo (or, Repo empty,
// an oci:// reference).
type Ref struct {
	Chart, Version, Repo string
}

// Ref says where the chart comes from. source is empty for the pinned
// upstream repository; an oci:// mirror of the same pinned version; or an
// absolute path to a packaged chart (.tgz) or a chart folder, installed as
// it is (its Chart.yaml says the version; Check has verified it).
func (p Pinned) Ref(source string) (Ref, error) {
	switch {
	case source == "":
		return Ref{Chart: p.Name, Version: p.Version, Repo: p.Repo}, nil
	case strings.HasPrefix(source, "oci://"):
		// A mirror carries the same pinned version; the reference names the chart.
		return Ref{Chart: source, Version: p.Version}, nil
	case IsRemote(source):
		return Ref{}, fmt.Errorf("chart %q: use a packaged chart (.tgz), a chart folder or an oci:// mirror of %s %s", source, p.Name, p.Version)
	case !filepath.IsAbs(source):
		// Relative paths are resolved by the caller (against the inventory's
		// folder); here they would depend on the working directory.
		return Ref{}, fmt.Errorf("chart %q must be an absolute path", source)
	default:
		return Ref{Chart: filepath.Clean(source)}, nil
	}
}

// Meta is what a local chart says about itself.
type Meta struct {
	Name    string
	Version string
	// Missing are dependencies Chart.yaml lists that the chart does not carry.
	Missing []string
}

type chartYAML struct {
	Name         string `yaml:"name"`
	Version      string `yaml:"version"`
	Dependencies []struct {
		Name    string `yaml:"name"`
		Version string `yaml:"version"`
	} `yaml:"dependencies"`
}

// Inspect reads a packaged chart (.tgz, one top-level folder as `helm
// package` makes it) or a chart folder: its name, version, and which of its
// dependencies are missing from charts/. Helm refuses a chart that lacks
// any dependency Chart.yaml lists, even one a condition disables.
func Inspect(p string) (*Meta, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	var (
		chartFile []byte
		present   = map[string]bool{} // entries of charts/: names and archives
	)
	if st.IsDir() {
		if chartFile, err = os.ReadFile(filepath.Join(p, "Chart.yaml")); err != nil {
			return nil, fmt.Errorf("%s is not a chart folder: %w", p, err)
		}
		entries, err := os.ReadDir(filepath.Join(p, "charts"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		for _, e := range entries {
			present[e.Name()] = true
		}
	} else {
		if chartFile, present, err = readArchive(p); err != nil {
			return nil, err
		}
	}
	var c chartYAML
	if err := yaml.Unmarshal(chartFile, &c); err != nil {
		return nil, fmt.Errorf("%s: Chart.yaml: %w", p, err)
	}
	if c.Name == "" || c.Version == "" {
		return nil, fmt.Errorf("%s: Chart.yaml names no chart or version", p)
	}
	m := &Meta{Name: c.Name, Version: c.Version}
	for _, d := range c.Dependencies {
		if !present[d.Name] && !present[d.Name+"-"+d.Version+".tgz"] {
			m.Missing = append(m.Missing, d.Name+" "+d.Version)
		}
	}
	return m, nil
}

// readArchive returns the top-level Chart.yaml of a packaged chart and the
// names directly under its charts/ folder.
func readArchive(p string) ([]byte, map[string]bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s is not a packaged chart (gzip): %w", p, err)
	}
	tr := tar.NewReader(gz)
	var chartFile []byte
	present := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s is not a packaged chart (tar): %w", p, err)
		}
		parts := strings.Split(path.Clean(h.Name), "/")
		switch {
		case len(parts) == 2 && parts[1] == "Chart.yaml":
			if chartFile, err = io.ReadAll(io.LimitReader(tr, 1<<20)); err != nil {
				return nil, nil, err
			}
		case len(parts) >= 3 && parts[1] == "charts":
			present[parts[2]] = true
		}
	}
	if chartFile == nil {
		return nil, nil, fmt.Errorf("%s holds no <chart>/Chart.yaml: not a chart packaged by helm", p)
	}
	return chartFile, present, nil
}

// Need is one chart rack is about to install, and what the inventory says
// about where it comes from.
type Need struct {
	// Key is the addon's inventory key, e.g. addons.metallb.
	Key string
	// Where is FILE:LINE of the key, for messages.
	Where  string
	Pinned Pinned
	// Override is the addon's own chart (addons.<name>.chart), made absolute.
	Override string
}

// Source is where a needed chart is installed from: the override, else
// the mirror's archive, else "" (the upstream repository).
func (n Need) Source(mirror string) string {
	switch {
	case n.Override != "":
		return n.Override
	case mirror != "":
		return filepath.Join(mirror, n.Pinned.File())
	}
	return ""
}

// Check verifies, before anything is installed, that every local chart the
// needs point at is there and complete: the mirror's archive of each pinned
// version, or the addon's own override. mirrorFrom says where the mirror was
// configured, for messages. It returns every problem at once; warnings
// (an override at another version than the pinned one) come back apart.
func Check(needs []Need, mirror, mirrorFrom string) (warnings []string, err error) {
	var errs []error
	if mirror != "" {
		if st, err := os.Stat(mirror); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("%s: chart mirror %s is not a folder: create it and fetch the charts into it on a connected machine:\n  %s",
				mirrorFrom, mirror, pullCommands(needs, mirror))
		}
	}
	for _, n := range needs {
		src := n.Source(mirror)
		if src == "" || IsRemote(src) {
			continue // fetched by Helm from the repository or registry
		}
		m, err := Inspect(src)
		switch {
		case n.Override == "" && errors.Is(err, fs.ErrNotExist):
			errs = append(errs, fmt.Errorf("%s: %s: chart %s %s is not in the chart mirror %s (%s): fetch it on a connected machine with `%s`",
				n.Where, n.Key, n.Pinned.Name, n.Pinned.Version, mirror, mirrorFrom, n.Pinned.PullCommand(mirror)))
		case errors.Is(err, fs.ErrNotExist):
			errs = append(errs, fmt.Errorf("%s: %s.chart: %s does not exist: point it at a packaged chart, or fetch the pinned one with `%s`",
				n.Where, n.Key, src, n.Pinned.PullCommand(filepath.Dir(src))))
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %s: %w: replace it with the chart `%s` fetches", n.Where, n.Key, err, n.Pinned.PullCommand(filepath.Dir(src))))
		case m.Name != n.Pinned.Name:
			errs = append(errs, fmt.Errorf("%s: %s: %s is the chart %q, not %s: fetch the right one with `%s`",
				n.Where, n.Key, src, m.Name, n.Pinned.Name, n.Pinned.PullCommand(filepath.Dir(src))))
		case len(m.Missing) > 0:
			errs = append(errs, fmt.Errorf("%s: %s: chart %s lacks its dependencies %s in charts/ (Helm needs every dependency Chart.yaml lists, even a disabled one): "+
				"run `helm dependency build %s` on a connected machine, or use the packaged chart `%s` fetches",
				n.Where, n.Key, src, strings.Join(m.Missing, ", "), src, n.Pinned.PullCommand("")))
		case n.Override == "" && m.Version != n.Pinned.Version:
			errs = append(errs, fmt.Errorf("%s: %s: %s holds %s %s, not %s: fetch the pinned one with `%s`",
				n.Where, n.Key, src, m.Name, m.Version, n.Pinned.Version, n.Pinned.PullCommand(mirror)))
		case m.Version != n.Pinned.Version:
			warnings = append(warnings, fmt.Sprintf("%s: %s.chart: %s is %s %s; rack is tested with %s",
				n.Where, n.Key, src, m.Name, m.Version, n.Pinned.Version))
		}
	}
	return warnings, errors.Join(errs...)
}

func pullCommands(needs []Need, dir string) string {
	var cmds []string
	for _, n := range needs {
		if n.Override == "" {
			cmds = append(cmds, n.Pinned.PullCommand(dir))
		}
	}
	return strings.Join(cmds, "\n  ")
}

// Unpack writes the chart in the archive at src (one top-level folder, as
// helm package makes it) into dst, an existing empty folder: the top-level
// folder's contents become dst's. Only regular files and folders are
// written, and only inside dst.
func Unpack(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s is not a gzip archive: %w", src, err)
	}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		_, rest, ok := strings.Cut(name, "/")
		if !ok || rest == "" {
			continue // the top-level folder itself
		}
		if !filepath.IsLocal(rest) {
			return fmt.Errorf("%s: entry %q points outside the chart", src, hdr.Name)
		}
		target := filepath.Join(dst, filepath.FromSlash(rest))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, io.LimitReader(tr, hdr.Size))
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}
