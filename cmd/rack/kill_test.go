package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/homelab/rack/internal/fakek3s"
	"github.com/homelab/rack/internal/testlab"
	"github.com/homelab/rack/nodes/kube"
)

// The kill-point tests run rack as its own process and SIGKILL it where a
// real run can be cut off (Ctrl-C, SIGKILL, a dropped link, a power cut);
// the next run must finish the job.

// goEnv is the go command's environment as this test process started: the
// in-process CLI tests later point HOME and XDG_CACHE_HOME at their labs,
// which would give `go build` an empty build cache.
var goEnv = func() []string {
	out, err := exec.Command("go", "env", "GOCACHE", "GOMODCACHE", "GOPATH").Output()
	if err != nil {
		return nil
	}
	f := strings.Fields(string(out))
	if len(f) != 3 {
		return nil
	}
	return []string{"GOCACHE=" + f[0], "GOMODCACHE=" + f[1], "GOPATH=" + f[2]}
}()

var rackBin struct {
	once sync.Once
	path string
	err  error
}

// rackBinary builds bin/rack once per test process.
func rackBinary(t testing.TB) string {
	t.Helper()
	rackBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "rack-bin-")
		if err != nil {
			rackBin.err = err
			return
		}
		rackBin.path = filepath.Join(dir, "rack")
		build := exec.Command("go", "build", "-o", rackBin.path, ".")
		build.Env = append(os.Environ(), goEnv...)
		if out, err := build.CombinedOutput(); err != nil {
			rackBin.err = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if rackBin.err != nil {
		t.Fatalf("building rack: %v", rackBin.err)
	}
	return rackBin.path
}

// startRack starts `rack ARGS` as a process of its own, with the lab's
// environment; stop it with SIGKILL.
func startRack(t *testing.T, lab *testlab.Lab, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(rackBinary(t), append([]string{"-i", lab.Inventory}, args...)...)
	cmd.Env = os.Environ()
	for k, v := range lab.Env() {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	log, err := os.Create(filepath.Join(t.TempDir(), "rack.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("rack's output:\n%s", b)
		}
	})
	return cmd
}

func sigkill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = cmd.Process.Wait()
}

func killCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustUp(t *testing.T, lab *testlab.Lab) {
	t.Helper()
	out, errOut, code := rack(t, lab.Env(), "-i", lab.Inventory, "up", "--nodes-only", "--yes")
	if code != exitOK {
		t.Fatalf("rack up: exit %d\n%s\n%s", code, out, errOut)
	}
}

func planText(t *testing.T, lab *testlab.Lab) string {
	t.Helper()
	out, errOut, code := rack(t, lab.Env(), "-i", lab.Inventory, "plan")
	if code != exitOK {
		t.Fatalf("rack plan: exit %d\n%s\n%s", code, out, errOut)
	}
	return out
}

func kubeletVersion(t *testing.T, lab *testlab.Lab, node string) string {
	t.Helper()
	n, err := lab.Clientset().CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !kube.NodeReady(n) {
		return "not ready"
	}
	return n.Status.NodeInfo.KubeletVersion
}

func noTempFiles(t *testing.T, lab *testlab.Lab, node string) {
	t.Helper()
	out, err := lab.Host(node).Exec(context.Background(), `ls -a /usr/local/bin /etc/rancher/k3s /etc/systemd/system /boot/firmware 2>/dev/null | grep rack-tmp || true`)
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("%s: temp files left: %q %v", node, out, err)
	}
}

// Killed after the new config was written but before the restart: k3s
// keeps running with the old one, and the next plan must still restart it.
// (A new version goes through rack upgrade apply, whose kill point is
// TestUpgradeKilledResumes.)
func TestKilledBeforeRestartIsFinished(t *testing.T) {
	t.Parallel() // its own lab; rack runs as a process of its own
	lab := testlab.New(t, testlab.Spec{Cluster: "kill", Nodes: []testlab.Node{
		{Name: "srv", Role: "server"}, {Name: "wrk", Role: "agent"},
	}})
	ctx := killCtx(t)
	mustUp(t, lab)
	// k3s' servicelb off: a server setting, in its config.yaml.
	inv, err := os.ReadFile(lab.Inventory)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(inv), "  k3s:\n", "  k3s:\n    disable: [servicelb]\n", 1)
	if edited == string(inv) {
		t.Fatalf("no k3s section in the lab's inventory:\n%s", inv)
	}
	if err := os.WriteFile(lab.Inventory, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := lab.Host("srv")
	if err := fakek3s.CloseGate(ctx, srv, "restart", "k3s"); err != nil {
		t.Fatal(err)
	}
	cmd := startRack(t, lab, "up", "--nodes-only", "--yes")
	if _, err := fakek3s.WaitAtGate(ctx, srv, "restart", "k3s"); err != nil {
		t.Fatal(err)
	}
	sigkill(t, cmd)
	if err := fakek3s.KillAtGate(ctx, srv, "restart", "k3s"); err != nil {
		t.Fatal(err)
	}
	if cfg, _ := srv.ReadFile("/etc/rancher/k3s/config.yaml"); !strings.Contains(string(cfg), "servicelb") {
		t.Fatalf("the new config is not in place: %s", cfg)
	}
	plan := planText(t, lab)
	if !strings.Contains(plan, "restart k3s") {
		t.Fatalf("the plan after the kill does not restart the server:\n%s", plan)
	}
	mustUp(t, lab)
	for _, n := range []string{"srv", "wrk"} {
		noTempFiles(t, lab, n)
	}
	if plan := planText(t, lab); !strings.Contains(plan, "no changes") {
		t.Errorf("not converged after the re-run:\n%s", plan)
	}
}

// Killed after the Pi's cmdline.txt was edited but before the reboot: the
// memory cgroup stays off until a reboot, and the next run must reboot.
func TestKilledBeforeRebootIsFinished(t *testing.T) {
	t.Parallel() // its own lab; rack runs as a process of its own
	lab := testlab.New(t, testlab.Spec{Cluster: "kill", Nodes: []testlab.Node{{Name: "pi", Role: "server", Pi: true}}})
	ctx := killCtx(t)
	pi := lab.Host("pi")
	if err := fakek3s.CloseGate(ctx, pi, "reboot", ""); err != nil {
		t.Fatal(err)
	}
	cmd := startRack(t, lab, "up", "--nodes-only", "--yes")
	if _, err := fakek3s.WaitAtGate(ctx, pi, "reboot", ""); err != nil {
		t.Fatal(err)
	}
	sigkill(t, cmd)
	if err := fakek3s.KillAtGate(ctx, pi, "reboot", ""); err != nil {
		t.Fatal(err)
	}
	if line, _ := pi.ReadFile("/boot/firmware/cmdline.txt"); !strings.Contains(string(line), "cgroup_enable=memory") {
		t.Fatalf("cmdline.txt was not edited before the kill: %q", line)
	}
	if boots, _ := fakek3s.Boots(ctx, pi); boots != 0 {
		t.Fatalf("the Pi rebooted %d times although rack was killed before", boots)
	}
	plan := planText(t, lab)
	if !strings.Contains(plan, "the reboot after the edit has not happened yet") {
		t.Fatalf("the plan after the kill does not reboot the Pi:\n%s", plan)
	}
	mustUp(t, lab)
	if boots, _ := fakek3s.Boots(ctx, pi); boots != 1 {
		t.Errorf("the Pi booted %d times, want 1", boots)
	}
	if v := kubeletVersion(t, lab, "pi"); v != lab.Spec.Version {
		t.Errorf("the Pi runs %s, want %s", v, lab.Spec.Version)
	}
	if plan := planText(t, lab); !strings.Contains(plan, "no changes") {
		t.Errorf("not converged after the re-run:\n%s", plan)
	}
}

// Killed in the middle of uploading the binary (a dropped link): the temp
// file stays on the node until the next run removes it.
func TestKilledUploadLeavesNoTempFile(t *testing.T) {
	t.Parallel() // its own lab; rack runs as a process of its own
	lab := testlab.New(t, testlab.Spec{Cluster: "kill", Nodes: []testlab.Node{{Name: "srv", Role: "server"}}})
	ctx := killCtx(t)
	srv := lab.Host("srv")
	// A slow link makes the upload last long enough to be cut off.
	if err := srv.ShapeLink(ctx, "8mbit"); err != nil {
		t.Fatal(err)
	}
	cmd := startRack(t, lab, "up", "--nodes-only", "--yes")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, _ := srv.Exec(ctx, `ls -a /usr/local/bin | grep '^\.k3s\.rack-tmp-' || true`)
		if strings.TrimSpace(string(out)) != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the upload never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	sigkill(t, cmd)
	if err := srv.ShapeLink(ctx, ""); err != nil {
		t.Fatal(err)
	}
	plan := planText(t, lab)
	if !strings.Contains(plan, "temp file(s) of an interrupted upload") {
		t.Fatalf("the plan does not clean up the killed upload:\n%s", plan)
	}
	mustUp(t, lab)
	noTempFiles(t, lab, "srv")
	if v := kubeletVersion(t, lab, "srv"); v != lab.Spec.Version {
		t.Errorf("the server runs %s, want %s", v, lab.Spec.Version)
	}
}
