// Command modalign raises the dependency versions of rack's module and of the
// tool wrapper modules (scripts/tools/...) so that a module both need is
// required at one version, the highest either asks for.
//
// Why: `make test` compiles six module graphs from an empty build cache (rack,
// the control plane, the pulumi CLI, the kubernetes provider, MetalLB,
// Traefik). Go reuses a compiled package across builds only when the package
// and everything below it are at the same versions, so one differing
// golang.org/x/sys made every graph compile its own grpc, protobuf, otel and
// x/net: about a fifth of the compiling was the same source again.
//
// What is being built keeps its own release: Kubernetes, Pulumi, Helm, kine,
// MetalLB and Traefik modules are raised only within the minor version they
// are at (a patch release), never to another minor; when required at a commit
// (a pseudo-version), only between builds of the same Kubernetes minor. Other
// modules at v1 or later (and golang.org/x) move to the highest version among
// the graphs, other v0 modules only within their minor. A module a go.mod
// replaces is left alone in that graph.
//
//	go run ./scripts/modalign          # rewrite go.mod/go.sum until aligned
//	go run ./scripts/modalign -check   # exit 1 and list what is not aligned
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
)

// builds are the go.mod folders whose builds share a build cache in make
// test, relative to the repository root, with what each compiles: rack's
// packages and tests, and for each tool module the packages its tools.go
// imports (what its build script builds). kine is not among them: it is the
// one tool built with cgo, so nothing of it is shared anyway.
var builds = []struct {
	dir     string
	targets []string // nil: the imports of the folder's tools.go
}{
	{".", []string{"-test", "./..."}},
	{"scripts/tools", nil},
	{"scripts/tools/pulumi", nil},
	{"scripts/tools/provider", nil},
	{"scripts/tools/images/metallb", nil},
	{"scripts/tools/images/traefik", nil},
}

// pinnedPrefixes are the projects whose releases the tools are: raised only
// to a later patch of the same minor.
var pinnedPrefixes = []string{
	"k8s.io/", "sigs.k8s.io/", "github.com/pulumi/", "helm.sh/",
	"go.universe.tf/", "github.com/metallb/", "github.com/traefik/", "github.com/k3s-io/",
}

type mod struct {
	Path    string
	Version string
	Main    bool
	Replace *struct{ Path, Version string }
}

func main() {
	check := flag.Bool("check", false, "only report modules required at different versions; exit 1 if any")
	flag.Parse()
	if err := run(*check, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "modalign:", err)
		os.Exit(1)
	}
}

func run(check bool, out io.Writer) error {
	for round := 1; round <= 6; round++ {
		graphs := map[string]map[string]string{}
		for _, b := range builds {
			g, err := graph(b.dir, b.targets)
			if err != nil {
				return err
			}
			graphs[b.dir] = g
		}
		edits := plan(graphs)
		if len(edits) == 0 {
			fmt.Fprintf(out, "aligned: the %d builds share every module they both compile\n", len(builds))
			return nil
		}
		if check {
			for _, b := range builds {
				for _, e := range edits[b.dir] {
					fmt.Fprintf(out, "%s/go.mod: %s (run: go run ./scripts/modalign)\n", b.dir, e)
				}
			}
			return errors.New("module versions differ between the build graphs")
		}
		for _, b := range builds {
			dir := b.dir
			if len(edits[dir]) == 0 {
				continue
			}
			fmt.Fprintf(out, "round %d: %s: %d raised\n", round, dir, len(edits[dir]))
			args := []string{"mod", "edit"}
			for _, e := range edits[dir] {
				args = append(args, "-require="+strings.Replace(e, " ", "@", 1))
			}
			if err := goCmd(dir, nil, args...); err != nil {
				return err
			}
			// -e: tidy also resolves the tests of dependencies, which no
			// build here compiles (MetalLB's need a package that newer runc
			// releases dropped).
			if err := goCmd(dir, nil, "mod", "tidy", "-e"); err != nil {
				return err
			}
		}
	}
	return errors.New("not aligned after 6 rounds: a module's requirements keep moving; see the edits above")
}

// plan lists, per module folder, "path version" raises: each module in two
// or more graphs goes to the highest version among them (pinned projects:
// the highest of the same minor).
func plan(graphs map[string]map[string]string) map[string][]string {
	best := map[string]string{} // group key -> highest version
	count := map[string]int{}
	for _, g := range graphs {
		for p, v := range g {
			k := group(g, p, v)
			count[k]++
			if b, ok := best[k]; !ok || semver.Compare(v, b) > 0 {
				best[k] = v
			}
		}
	}
	edits := map[string][]string{}
	for dir, g := range graphs {
		for p, v := range g {
			k := group(g, p, v)
			if count[k] > 1 && semver.Compare(v, best[k]) < 0 {
				edits[dir] = append(edits[dir], p+" "+best[k])
			}
		}
		sort.Strings(edits[dir])
	}
	return edits
}

// group is the set of versions of path (at v in graph g) that may be raised
// to the highest among them.
func group(g map[string]string, path, v string) string {
	switch {
	case !pinned(path) && (semver.Major(v) != "v0" || strings.HasPrefix(path, "golang.org/x/")):
		return path
	case !pinned(path):
		// v0: no compatibility promise, and they break it (OpenTelemetry's
		// log API between 0.17 and 0.21 broke Traefik's exporter; gnostic
		// 0.7 moved to go.yaml.in/yaml/v3 under Kubernetes 0.33's
		// kube-openapi). Within a minor only; golang.org/x keeps its
		// promise without the v1.
		return path + "@" + semver.MajorMinor(v)
	case !module.IsPseudoVersion(v):
		return path + "@" + semver.MajorMinor(v) // patch releases only
	case strings.HasPrefix(path, "k8s.io/") || strings.HasPrefix(path, "sigs.k8s.io/"):
		// Kubernetes' commit-pinned libraries (utils, kube-openapi, json)
		// move with Kubernetes: only between builds of the same minor.
		if k := g["k8s.io/apimachinery"]; k != "" {
			return path + "@k8s-" + semver.MajorMinor(k)
		}
		return path + "@" + v
	default:
		return path + "@" + v // a commit, not a release: kept as is
	}
}

func pinned(path string) bool {
	for _, p := range pinnedPrefixes {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// graph is the modules whose packages a build compiles (static, as all of
// make test's builds are): path -> selected version. Modules its go.mod
// replaces are left out: the replacement is that module's choice.
func graph(dir string, targets []string) (map[string]string, error) {
	var buf bytes.Buffer
	if targets == nil {
		// -e: tools.go imports main packages, which go list reports as
		// errors; only its import list is read.
		if err := goCmd(dir, &buf, "list", "-mod=readonly", "-e", "-tags", "tools", "-f", "{{join .Imports \"\\n\"}}", "."); err != nil {
			return nil, err
		}
		targets = strings.Fields(buf.String())
		if len(targets) == 0 {
			return nil, fmt.Errorf("%s/tools.go imports nothing: it must import what the folder builds", dir)
		}
		buf.Reset()
	}
	// -e: the provider's main package embeds files its build script
	// generates, missing here; its imports are what count.
	args := append([]string{"list", "-mod=readonly", "-e", "-deps", "-json=Module"}, targets...)
	if err := goCmd(dir, &buf, args...); err != nil {
		return nil, err
	}
	g := map[string]string{}
	dec := json.NewDecoder(&buf)
	for {
		var p struct{ Module *mod }
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("%s: go list -deps: %w", dir, err)
		}
		if m := p.Module; m != nil && !m.Main && m.Replace == nil && m.Version != "" {
			g[m.Path] = m.Version
		}
	}
	return g, nil
}

func goCmd(dir string, stdout io.Writer, args ...string) error {
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.FromSlash(dir)
	// Traefik's DNS-provider forks are not in the checksum database.
	cmd.Env = append(os.Environ(), "GONOSUMDB=github.com/nrdcg/*", "GOFLAGS=", "CGO_ENABLED=0")
	cmd.Stdout = stdout
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: go %s: %v\n%s", dir, strings.Join(args, " "), err, stderr.String())
	}
	return nil
}
