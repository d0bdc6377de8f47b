package k3s

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/internal/sleep"
	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/kube"
)

// run is what the steps of one plan share while Apply carries them out: the
// options, the local files opened once for every node, the binaries
// downloaded once per arch, and the cluster's client once the first server's
// kubeconfig is fetched. Planning creates it and leaves it empty.
type run struct {
	inv   *inventory.Inventory
	opts  Options
	files sourceSet

	mu   sync.Mutex
	bins map[string]Artifact // by arch
	kc   *kube.Kubeconfig
	cs   kubernetes.Interface
}

// stepFunc is a step's work; bind gives it the run it belongs to.
type stepFunc func(ctx context.Context, x *run, h *nodes.Host) error

func (f stepFunc) bind(x *run) func(context.Context, *nodes.Host) error {
	return func(ctx context.Context, h *nodes.Host) error { return f(ctx, x, h) }
}

var priv = nodes.RunOptions{Privileged: true}

// client is the cluster's clientset, once the first server's step fetched it.
func (x *run) client() (kubernetes.Interface, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.cs == nil {
		return nil, errors.New("the cluster's kubeconfig was not fetched from the first server (did it fail?)")
	}
	return x.cs, nil
}

// binary downloads (or finds) the verified binary for arch once per run.
func (x *run) binary(ctx context.Context, version, arch string) (Artifact, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if a, ok := x.bins[arch]; ok {
		return a, nil
	}
	a, err := x.opts.Binaries.Binary(ctx, version, arch)
	if err != nil {
		return Artifact{}, err
	}
	if x.bins == nil {
		x.bins = map[string]Artifact{}
	}
	x.bins[arch] = a
	return a, nil
}

func removeFiles(files []string) stepFunc {
	return func(ctx context.Context, _ *run, h *nodes.Host) error {
		return h.Run(ctx, removeCmd(files...), priv)
	}
}

func removeCmd(files ...string) nodes.Cmd { return nodes.Sh(`rm -f -- "$@"`, files...) }

// backupCmd copies a file to FILE.rack-backup once: a second run must not
// overwrite the original with an edited copy.
func backupCmd(path string) nodes.Cmd {
	return nodes.Sh(`[ -e "$1.rack-backup" ] || cp -p -- "$1" "$1.rack-backup"`, path)
}

// editCmdline keeps the first original only (a second run must not overwrite
// it with an edited copy), then writes the new line atomically and synced.
func editCmdline(path, line string) stepFunc {
	return func(ctx context.Context, _ *run, h *nodes.Host) error {
		if err := h.Run(ctx, backupCmd(path), priv); err != nil {
			return fmt.Errorf("back up %s: %w", path, err)
		}
		_, err := h.Upload(ctx, nodes.BytesSource([]byte(line)), path, nodes.FileOptions{Mode: 0o755, Privileged: true})
		return err
	}
}

func reboot() stepFunc {
	return func(ctx context.Context, x *run, h *nodes.Host) error { return h.Reboot(ctx, x.opts.rebootTimeout()) }
}

func install(pkgs []nodes.Package) stepFunc {
	return func(ctx context.Context, x *run, h *nodes.Host) error { return h.Install(ctx, pkgs, x.opts.LockWait) }
}

// mkdir makes a folder root-owned and closed to other users: pods reach it
// through the kubelet.
func mkdir(dir string) stepFunc {
	return func(ctx context.Context, _ *run, h *nodes.Host) error {
		return h.Run(ctx, mkdirCmd(dir, "0750"), priv)
	}
}

func mkdirCmd(dir, mode string) nodes.Cmd {
	return nodes.Sh(`install -d -m "$2" -- "$1"`, dir, mode)
}

func uploadBinary(version, arch string) stepFunc {
	return func(ctx context.Context, x *run, h *nodes.Host) error {
		a, err := x.binary(ctx, version, arch)
		if err != nil {
			return err
		}
		src, err := x.files.Open(a.Path)
		if err != nil {
			return err
		}
		_, err = h.Upload(ctx, src, BinaryPath, nodes.FileOptions{Mode: 0o755, Privileged: true})
		return err
	}
}

func uploadImages(images []string) stepFunc {
	return func(ctx context.Context, x *run, h *nodes.Host) error {
		if err := h.Run(ctx, mkdirCmd(ImagesDir, "0755"), priv); err != nil {
			return err
		}
		for _, img := range images {
			src, err := x.files.Open(img)
			if err != nil {
				return err
			}
			if _, err := h.Upload(ctx, src, ImagesDir+"/"+filepath.Base(img), nodes.FileOptions{Mode: 0o644, Privileged: true}); err != nil {
				return err
			}
		}
		return nil
	}
}

func writeConfig(cfg []byte) stepFunc {
	return func(ctx context.Context, _ *run, h *nodes.Host) error {
		if err := h.Run(ctx, mkdirCmd(filepath.Dir(ConfigPath), "0755"), priv); err != nil {
			return err
		}
		return h.WriteSecretFile(ctx, ConfigPath, cfg, nodes.FileOptions{Mode: 0o600, Privileged: true})
	}
}

func writeUnit(u Unit) stepFunc {
	return func(ctx context.Context, _ *run, h *nodes.Host) error {
		for _, dir := range []string{filepath.Dir(u.Path), filepath.Dir(u.EnvPath)} {
			if err := h.Run(ctx, mkdirCmd(dir, "0755"), priv); err != nil {
				return err
			}
		}
		if _, err := h.Upload(ctx, nodes.BytesSource(u.Content), u.Path, nodes.FileOptions{Mode: fileMode(u.Mode), Privileged: true}); err != nil {
			return err
		}
		if _, err := h.Upload(ctx, nodes.BytesSource(u.Env), u.EnvPath, nodes.FileOptions{Mode: 0o600, Privileged: true}); err != nil {
			return err
		}
		return h.Run(ctx, u.Enable, priv)
	}
}

// restart is bounded by --timeout: `systemctl restart` of a Type=notify unit
// with TimeoutStartSec=0 (as upstream writes k3s') waits for as long as k3s
// takes to report ready, which for a server that cannot start is forever.
func restart(u Unit, name string) stepFunc {
	return func(ctx context.Context, x *run, h *nodes.Host) error {
		timeout := x.opts.readyTimeout()
		rctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		err := h.Run(rctx, u.Restart, priv)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if rctx.Err() != nil {
			err = fmt.Errorf("%s did not report ready within %s (--timeout)", name, timeout)
		}
		return fmt.Errorf("%w%s", err, serviceLog(ctx, h, u))
	}
}

// serviceLog is the end of the service's log, for an error message.
func serviceLog(ctx context.Context, h *nodes.Host, u Unit) string {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := h.Output(ctx, u.Logs, nodes.RunOptions{Privileged: true, Quiet: true})
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		return "; its log could not be read"
	}
	return "; the end of its log:\n    " + strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "\n    ")
}

var kubeconfigCmd = nodes.Sh(`cat -- "$1"`, KubeconfigPath)

// fetchKubeconfig reads k3s.yaml from the first server once k3s has written
// it; every later step reaches the cluster through it.
func fetchKubeconfig() stepFunc {
	return func(ctx context.Context, x *run, h *nodes.Host) error {
		timeout := x.opts.readyTimeout()
		deadline := time.Now().Add(timeout)
		for {
			data, err := h.Output(ctx, kubeconfigCmd, nodes.RunOptions{Privileged: true, Quiet: true})
			if err == nil && len(data) > 0 {
				kc, err := kube.ParseKubeconfig(data, x.inv.Cluster.Name, ServerURL(x.inv.Cluster.APIEndpoint))
				if err != nil {
					return fmt.Errorf("%s on %s: %w", KubeconfigPath, h.Target.Name, err)
				}
				cs, err := kc.Clientset()
				if err != nil {
					return err
				}
				x.mu.Lock()
				x.kc, x.cs = kc, cs
				x.mu.Unlock()
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("k3s did not write %s within %s: the server did not start; look at its log (journalctl -u k3s)", KubeconfigPath, timeout)
			}
			if err := sleep.For(ctx, time.Second); err != nil {
				return err
			}
		}
	}
}

// waitReady waits until the Node is Ready at version and, for a server on
// embedded etcd, named after its etcd member (see kube.WaitReady).
func waitReady(name, version string, u Unit, etcdMember bool) stepFunc {
	return func(ctx context.Context, x *run, h *nodes.Host) error {
		cs, err := x.client()
		if err != nil {
			return err
		}
		if err := kube.WaitReady(ctx, cs, name, version, etcdMember, x.opts.readyTimeout()); err != nil {
			if ctx.Err() != nil {
				return err
			}
			return fmt.Errorf("%w%s", err, serviceLog(ctx, h, u))
		}
		return nil
	}
}

// writeApplied records what the service now runs from; see Applied.
func writeApplied(a Applied) stepFunc {
	return func(ctx context.Context, _ *run, h *nodes.Host) error {
		if err := h.Run(ctx, mkdirCmd(filepath.Dir(nodes.AppliedPath), "0700"), priv); err != nil {
			return err
		}
		return h.WriteSecretFile(ctx, nodes.AppliedPath, a.json(), nodes.FileOptions{Mode: 0o600, Privileged: true})
	}
}

func reconcileLabels(name string, w kube.Want) stepFunc {
	return func(ctx context.Context, x *run, _ *nodes.Host) error {
		cs, err := x.client()
		if err != nil {
			return err
		}
		_, err = kube.Reconcile(ctx, cs, name, w)
		return err
	}
}

// sourceSet opens each local file once for all nodes, so it is hashed once.
type sourceSet struct {
	mu sync.Mutex
	m  map[string]*nodes.Source
}

func (s *sourceSet) Open(path string) (*nodes.Source, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if src, ok := s.m[path]; ok {
		return src, nil
	}
	src, err := nodes.OpenSource(path)
	if err != nil {
		return nil, err
	}
	if s.m == nil {
		s.m = map[string]*nodes.Source{}
	}
	s.m[path] = src
	return src, nil
}

func (s *sourceSet) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, src := range s.m {
		src.Close()
	}
	s.m = nil
}
