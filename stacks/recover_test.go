package stacks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/homelab/rack/addons/argocd"
	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/inventory"
)

// The kill test runs `rack up`'s platform phase in a process of its own:
// this test binary, started again with these variables, runs Up and exits.
const (
	envHelperInventory = "RACK_STACKS_TEST_UP_INVENTORY"
	envHelperHome      = "RACK_STACKS_TEST_UP_PULUMI_HOME"
)

func init() {
	file := os.Getenv(envHelperInventory)
	if file == "" {
		return
	}
	inv, problems, err := inventory.Load(file)
	if err != nil || problems.HasErrors() {
		fmt.Fprintln(os.Stderr, err, problems)
		os.Exit(2)
	}
	_, err = Up(context.Background(), inv, Options{PulumiHome: os.Getenv(envHelperHome), Progress: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "up:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestUpKilledInHelmInstall: rack up SIGKILLed (with the pulumi CLI and the
// provider it started) while Helm installs Argo CD leaves a stack lock, a
// pending create in the state and a pending-install Helm release; the next
// rack up clears all three and installs the release.
func TestUpKilledInHelmInstall(t *testing.T) {
	r := newPlatRack(t, "killed", "n1", "n2")
	inv := r.inventory(t, platNodes, argoCDAddon)
	ctx := context.Background()

	log, err := os.Create(filepath.Join(t.TempDir(), "up.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envHelperInventory+"="+inv.File, envHelperHome+"="+r.home)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group: pulumi and the provider plugin go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if rel := r.release(t, argocd.DefaultNamespace, "argocd"); rel != nil && rel.Status == helmPendingInstall {
			break
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			t.Fatalf("the Argo CD release never went pending-install:\n%s", readFile(t, log.Name()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Every process of the run, whichever group the engine put them in.
	family := descendants(pid)
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, p := range family {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	_ = cmd.Wait()
	t.Logf("killed rack up (pid %d and %d more) in the middle of the Helm install", pid, len(family))

	// What the killed run left.
	if rel := r.release(t, argocd.DefaultNamespace, "argocd"); rel == nil || rel.Status != helmPendingInstall {
		t.Fatalf("release after the kill: %+v", rel)
	}
	state := filepath.Join(inv.StateDir(), stateSubdir, ".pulumi")
	locks, _ := filepath.Glob(filepath.Join(state, "locks", "*", Project, "killed", "*.json"))
	if len(locks) != 1 {
		t.Errorf("locks left: %v", locks)
	}
	var d struct {
		Checkpoint struct {
			Latest struct {
				Pending []struct{ Type string } `json:"pending_operations"`
			} `json:"latest"`
		} `json:"checkpoint"`
	}
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(state, "stacks", Project, "killed.json"))), &d); err != nil {
		t.Fatal(err)
	}
	if p := d.Checkpoint.Latest.Pending; len(p) == 0 || p[0].Type != "creating" {
		t.Errorf("pending operations in the state: %+v", p)
	}

	res, progress := r.mustUp(t, "up after the kill", inv, Options{})
	for _, want := range []string{
		"removed the lock of stack killed",
		"interrupted while creating",
		"Helm release argocd/argocd: removed revision 1 (pending-install)",
	} {
		if !strings.Contains(progress, want) {
			t.Errorf("the recovery does not say %q:\n%s", want, progress)
		}
	}
	if res.Changes["create"] == 0 {
		t.Errorf("changes %v", res.Changes)
	}
	r.wantRelease(t, argocd.DefaultNamespace, "argocd", "argo-cd", argocd.ChartVersion, 1)
	if _, err := r.dyn.Resource(applications).Namespace(argocd.DefaultNamespace).Get(ctx, argocd.DefaultRootApp, metav1.GetOptions{}); err != nil {
		t.Errorf("root Application: %v", err)
	}
	res, progress = r.mustUp(t, "next up", inv, Options{})
	onlySame(t, "next up", res.Changes)
	if strings.Contains(progress, "interrupted") || strings.Contains(progress, "pending operations") {
		t.Errorf("pending operations left after the recovery:\n%s", progress)
	}
}

// descendants lists the processes below pid (from /proc).
func descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) > 1 {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestClearStaleLocks: a lock whose pulumi is gone is removed; one held by
// a running pulumi, or written on another machine, stops the run.
func TestClearStaleLocks(t *testing.T) {
	host, _ := os.Hostname()
	backend := t.TempDir()
	dir := filepath.Join(backend, ".pulumi", "locks", "organization", Project, "lab")
	write := func(name string, l lockInfo) string {
		t.Helper()
		b, _ := json.Marshal(l)
		p := filepath.Join(dir, name+".json")
		platWrite(t, p, b)
		return p
	}

	// A process that is not pulumi, gone: its pid is free (or reused).
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	stale := write("stale", lockInfo{Pid: gone.Process.Pid, Username: "pi", Hostname: host, Timestamp: time.Now()})
	// Another stack's lock is not ours to judge.
	other := filepath.Join(backend, ".pulumi", "locks", "organization", Project, "other", "x.json")
	platWrite(t, other, []byte(`{"pid": 1, "hostname": "elsewhere"}`))
	var progress testenv.Buffer
	if err := clearStaleLocks("file://"+backend, Project, "lab", &progress); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale lock still there: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("another stack's lock was touched: %v", err)
	}
	if !strings.Contains(progress.String(), "removed the lock of stack lab") {
		t.Errorf("progress: %s", progress.String())
	}

	// A running pulumi (a sleep under that name).
	bin := filepath.Join(t.TempDir(), "pulumi")
	if err := os.Symlink("/bin/sleep", bin); err != nil {
		t.Fatal(err)
	}
	live := exec.Command(bin, "60")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = live.Process.Kill(); _ = live.Wait() })
	held := write("live", lockInfo{Pid: live.Process.Pid, Username: "pi", Hostname: host, Timestamp: time.Now()})
	err := clearStaleLocks("file://"+backend, Project, "lab", &progress)
	var locked *LockedError
	if !errors.As(err, &locked) || !locked.Here || !strings.Contains(err.Error(), "another rack up is working on this cluster") {
		t.Errorf("live lock: %v", err)
	}
	if err := os.Remove(held); err != nil {
		t.Fatal(err)
	}

	// Written on another machine: rack cannot tell; it says which file.
	far := write("far", lockInfo{Pid: 4242, Username: "pi", Hostname: "other-laptop", Timestamp: time.Now()})
	err = clearStaleLocks("file://"+backend, Project, "lab", &progress)
	if !errors.As(err, &locked) || locked.Here || !strings.Contains(err.Error(), "delete "+far) {
		t.Errorf("foreign lock: %v", err)
	}

	// Other backends keep their own locks.
	if err := clearStaleLocks("s3://bucket/rack", Project, "lab", &progress); err != nil {
		t.Errorf("s3 backend: %v", err)
	}
}
