package testcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/homelab/rack/internal/flock"
	"github.com/homelab/rack/internal/srcroot"
)

// EnvControlPlaneDir names a folder holding kube-apiserver,
// kube-controller-manager, kube-scheduler and kwok (and optionally etcd),
// used instead of running scripts/build-controlplane.sh.
const EnvControlPlaneDir = "RACK_CONTROLPLANE_DIR"

// Binaries are the executables of a control plane.
type Binaries struct {
	Etcd, APIServer, ControllerManager, Scheduler, Kwok string
	// Etcdctl, Etcdutl, Kine (k3s' SQLite datastore), Kubelet, KubeProxy and
	// Kubectl serve the test rack's fake k3s servers, its real nodes, and
	// side-by-side benchmarks.
	Etcdctl, Etcdutl, Kine, Kubelet, KubeProxy, Kubectl string
	// KwokStages is kwok's configuration: the default node and pod stages
	// (kwok has none built in; kwokctl normally supplies them).
	KwokStages []byte
}

// errNoBinaries marks a machine where the control plane cannot be had
// (as opposed to a component failing to start), which New turns into a skip.
var errNoBinaries = errors.New("testcluster: control-plane binaries unavailable")

// FindBinaries locates the control plane: $RACK_CONTROLPLANE_DIR when set,
// otherwise whatever scripts/build-controlplane.sh prints on its last line
// (it builds on the first call, about 12 minutes on 2 cores, and answers
// from its cache afterwards). Progress lines of the build go to logf.
func FindBinaries(ctx context.Context, logf func(string, ...any)) (Binaries, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	root, rootErr := RepoRoot()
	dir := os.Getenv(EnvControlPlaneDir)
	if dir == "" {
		if rootErr != nil {
			return Binaries{}, fmt.Errorf("%w: %v, and %s is not set", errNoBinaries, rootErr, EnvControlPlaneDir)
		}
		var err error
		if dir, err = buildControlPlane(ctx, root, logf); err != nil {
			return Binaries{}, err
		}
	}
	b := Binaries{
		APIServer:         filepath.Join(dir, "kube-apiserver"),
		ControllerManager: filepath.Join(dir, "kube-controller-manager"),
		Scheduler:         filepath.Join(dir, "kube-scheduler"),
		Kwok:              filepath.Join(dir, "kwok"),
		Kine:              filepath.Join(dir, "kine"),
		Kubelet:           filepath.Join(dir, "kubelet"),
		KubeProxy:         filepath.Join(dir, "kube-proxy"),
		Kubectl:           filepath.Join(dir, "kubectl"),
		Etcd:              filepath.Join(dir, "etcd"),
		Etcdctl:           filepath.Join(dir, "etcdctl"),
		Etcdutl:           filepath.Join(dir, "etcdutl"),
	}
	for _, p := range []string{b.APIServer, b.ControllerManager, b.Scheduler, b.Kwok, b.Kine, b.Kubelet, b.KubeProxy, b.Kubectl, b.Etcd, b.Etcdctl, b.Etcdutl} {
		if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
			return Binaries{}, fmt.Errorf("%w: %s is missing or not executable (scripts/build-controlplane.sh builds it)", errNoBinaries, p)
		}
	}
	stages, err := kwokStages(ctx, dir, root)
	if err != nil {
		return Binaries{}, err
	}
	b.KwokStages = stages
	return b, nil
}

// RepoRoot finds rack's module root (srcroot.Find).
func RepoRoot() (string, error) { return srcroot.Find() }

// StampedKubelet is a kubelet that reports version, as k3s' embedded one
// reports the k3s version: what the test rack's real nodes run, so that a
// Node's kubelet version says which "k3s" it runs. Built (a link, about a
// minute when the build cache is warm) and cached once per version.
func StampedKubelet(ctx context.Context, version string, logf func(string, ...any)) (string, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return buildControlPlane(ctx, root, logf, "kubelet", version)
}

// buildControlPlane runs the build script under a machine-wide lock: the
// script is not safe to run twice at once (both would write the same
// temporary binaries), and test packages run concurrently.
func buildControlPlane(ctx context.Context, root string, logf func(string, ...any), args ...string) (string, error) {
	state, err := stateRoot()
	if err != nil {
		return "", err
	}
	lock, err := flock.Acquire(ctx, filepath.Join(state, "build.lock"))
	if err != nil {
		return "", err
	}
	defer lock.Unlock()
	dir, err := srcroot.RunScript(ctx, root, "scripts/build-controlplane.sh", args, logf, "testcluster")
	if err != nil {
		return "", fmt.Errorf("%w: %v", errNoBinaries, err)
	}
	return dir, nil
}

// kwokStages returns kwok's configuration: binDir/kwok-stages.yaml when a
// prepared folder brings one, else the default stages read from the kwok
// module (the version scripts/tools pins) in the Go module cache.
func kwokStages(ctx context.Context, binDir, root string) ([]byte, error) {
	if b, err := os.ReadFile(filepath.Join(binDir, "kwok-stages.yaml")); err == nil {
		return b, nil
	}
	if root == "" {
		return nil, fmt.Errorf("%w: no kwok-stages.yaml in %s and no source tree to find kwok's stages", errNoBinaries, binDir)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "scripts", "tools", "go.mod"))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNoBinaries, err)
	}
	version := ""
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "sigs.k8s.io/kwok" {
			version = f[1]
		}
	}
	if version == "" {
		return nil, fmt.Errorf("%w: scripts/tools/go.mod does not require sigs.k8s.io/kwok", errNoBinaries)
	}
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", "sigs.k8s.io/kwok@"+version)
	cmd.Dir = os.TempDir() // outside any module: nothing to resolve but this one
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%w: go mod download sigs.k8s.io/kwok@%s: %v", errNoBinaries, version, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		return nil, fmt.Errorf("%w: go mod download sigs.k8s.io/kwok@%s: no folder in %q", errNoBinaries, version, out)
	}
	// kwok's default stages as kwokctl configures them: nodes initialise to
	// Ready and renew their lease; pods become Running, and are completed
	// and deleted the way a kubelet would.
	stages := []string{
		"kustomize/stage/node/fast/node-initialize.yaml",
		"kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
		"kustomize/stage/pod/fast/pod-ready.yaml",
		"kustomize/stage/pod/fast/pod-complete.yaml",
		"kustomize/stage/pod/fast/pod-delete.yaml",
	}
	var all bytes.Buffer
	for _, p := range stages {
		b, err := os.ReadFile(filepath.Join(mod.Dir, p))
		if err != nil {
			return nil, fmt.Errorf("%w: kwok stage: %v", errNoBinaries, err)
		}
		all.WriteString("---\n")
		all.Write(b)
		all.WriteString("\n")
	}
	return all.Bytes(), nil
}
