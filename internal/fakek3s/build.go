// Package fakek3s builds and installs the stand-ins that let rack's tests
// drive k3s installs on test hosts (internal/testrack) for real: a fake
// k3s binary (./k3s) in front of the test control plane
// (internal/testcluster), and a systemctl shim (./systemctl) for hosts
// that have no systemd.
package fakek3s

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/homelab/rack/internal/fakek3s/cpfile"
	"github.com/homelab/rack/internal/testcluster"
)

// DefaultVersion is the k3s version tests usually install.
const DefaultVersion = "v1.33.5+k3s1"

// Build builds the fake k3s reporting version (as `k3s --version` and as
// its Nodes' kubelet version) and returns the binary's path. Builds are
// cached per version and source, so repeated calls cost a hash.
func Build(t testing.TB, version string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	path, err := BuildK3s(ctx, version, cpfile.DefaultPath)
	if err != nil {
		t.Fatalf("fakek3s: %v", err)
	}
	return path
}

// BuildK3s builds the fake k3s for version, reading the control plane
// description from controlPlaneFile on the host it runs on.
func BuildK3s(ctx context.Context, version, controlPlaneFile string) (string, error) {
	if version == "" || !strings.HasPrefix(version, "v") {
		return "", fmt.Errorf("k3s version %q: expected something like %s", version, DefaultVersion)
	}
	return build(ctx, "k3s", "k3s",
		"-X main.version="+version+" -X main.controlPlaneFile="+controlPlaneFile)
}

// BuildInit builds the systemctl shim (see InstallInit).
func BuildInit(ctx context.Context) (string, error) {
	return build(ctx, "systemctl", "systemctl", "")
}

// build compiles ./<pkg> (relative to this package) into a cache folder
// keyed by everything that affects the binary: the sources of this package
// tree, go.mod/go.sum, the Go version and the ldflags. Concurrent builds
// (parallel tests, several test binaries) write to temporary names and
// rename, so readers only ever see complete binaries.
func build(ctx context.Context, pkg, name, ldflags string) (string, error) {
	root, err := testcluster.RepoRoot()
	if err != nil {
		return "", err
	}
	goVersion, err := exec.CommandContext(ctx, "go", "env", "GOVERSION").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOVERSION: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00", pkg, ldflags, strings.TrimSpace(string(goVersion)))
	if err := hashSources(ctx, h, root, "./internal/fakek3s/"+pkg); err != nil {
		return "", err
	}
	key := hex.EncodeToString(h.Sum(nil))[:16]
	cacheDir := os.Getenv("CACHE_DIR")
	if cacheDir == "" {
		cacheDir = filepath.Join(root, ".cache")
	}
	dir := filepath.Join(cacheDir, "fakek3s", pkg+"-"+key)
	out := filepath.Join(dir, name)
	if _, err := os.Stat(out); err == nil {
		// Marks the entry as used, so pruneCache keeps it.
		now := time.Now()
		_ = os.Chtimes(dir, now, now)
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, name+".tmp*")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	// Static and stripped: the binary is copied onto hosts, and must run
	// whatever libc they have.
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", strings.TrimSpace("-s -w "+ldflags),
		"-o", tmp.Name(), "./internal/fakek3s/"+pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./internal/fakek3s/%s: %v\n%s", pkg, err, b)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", err
	}
	pruneCache(filepath.Dir(dir), pkg, dir)
	return out, nil
}

// cacheMaxAge bounds how long an unused build stays in the cache. Every
// source change makes a new entry, so without pruning they pile up.
const cacheMaxAge = 24 * time.Hour

// pruneCache removes entries of pkg other than keep that were not used for
// cacheMaxAge.
func pruneCache(parent, pkg, keep string) {
	entries, _ := filepath.Glob(filepath.Join(parent, pkg+"-*"))
	for _, e := range entries {
		if st, err := os.Stat(e); err == nil && e != keep && st.IsDir() && time.Since(st.ModTime()) > cacheMaxAge {
			_ = os.RemoveAll(e)
		}
	}
}

// hashSources feeds go.mod, go.sum and every non-test Go file of the
// module's packages the binary imports (go list -deps) into h.
func hashSources(ctx context.Context, h interface{ Write([]byte) (int, error) }, root, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", pkg)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("go list -deps %s: %w", pkg, err)
	}
	files := []string{filepath.Join(root, "go.mod"), filepath.Join(root, "go.sum")}
	for _, dir := range strings.Fields(string(out)) {
		if !strings.HasPrefix(dir, root+string(filepath.Separator)) {
			continue // a module from the cache: go.sum pins it
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if !e.IsDir() && strings.HasSuffix(e.Name(), ".go") && !strings.HasSuffix(e.Name(), "_test.go") {
				files = append(files, filepath.Join(dir, e.Name()))
			}
		}
	}
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", strings.TrimPrefix(f, root), len(b))
		_, _ = h.Write(b)
	}
	return nil
}
