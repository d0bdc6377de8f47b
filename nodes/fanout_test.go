package nodes

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/homelab/rack/internal/testenv"

	"github.com/homelab/rack/internal/testrack"
)

func TestGatherFacts(t *testing.T) {
	r := testrack.New(t, 2, testrack.WithPi(0))
	ctx := testCtx(t)
	pi, x86 := r.Hosts[0], r.Hosts[1]

	o, _, out := testOptions(env{EnvSudoPassword: r.SudoPassword})
	hp := mustConnect(t, ctx, targetFor(r, pi, testrack.SudoUser), o)
	f, err := hp.Gather(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if f.Arch != "arm64" || f.Machine != "aarch64" || !f.ArchKnown || !f.IsPi() || f.Model != testrack.DefaultPiModel {
		t.Errorf("pi arch/model: %q %q %v %q", f.Arch, f.Machine, f.ArchKnown, f.Model)
	}
	if f.CmdlinePath != "/boot/firmware/cmdline.txt" || f.Cmdline != strings.TrimSpace(testrack.PiCmdline) {
		t.Errorf("pi cmdline: %q %q", f.CmdlinePath, f.Cmdline)
	}
	if f.OS.ID != "debian" || f.OS.VersionID != "12" || f.OS.PrettyName != "Debian GNU/Linux 12 (bookworm)" {
		t.Errorf("pi os: %+v", f.OS)
	}
	if f.Hostname != pi.Name || f.MemTotal == 0 || f.RancherDiskPath != "/var/lib/rancher" || f.RancherDiskFree == 0 || f.CgroupVersion == 0 {
		t.Errorf("pi basics: %+v", f)
	}
	if f.K3sInstalled || f.K3sConfigPresent || f.K3sUnitPath != "" || len(f.Warnings) > 0 {
		t.Errorf("pi k3s: %+v", f)
	}
	if out.String() != "" {
		t.Errorf("facts script printed to the output: %q", out)
	}

	// x86 with a k3s install; read by the password-sudo user, since
	// config.yaml is root's and 0600.
	k3s := "#!/bin/sh\necho 'k3s version v1.33.5+k3s1 (9a1c6e26)'\necho 'go version go1.24.6'\n"
	config := "token: K10secret\nnode-label: [zone=shelf-2]\n"
	unit := "[Unit]\nDescription=Lightweight Kubernetes\n[Service]\nExecStart=/usr/local/bin/k3s server\n"
	x86.WriteFile("/usr/local/bin/k3s", []byte(k3s), 0o755)
	x86.WriteFile("/etc/rancher/k3s/config.yaml", []byte(config), 0o600)
	x86.WriteFile("/etc/systemd/system/k3s.service", []byte(unit), 0o644)
	hx := mustConnect(t, ctx, targetFor(r, x86, testrack.PasswordSudoUser), o)
	f, err = hx.Gather(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(k3s))
	if f.Arch != "amd64" || f.IsPi() || f.Model != "" || f.CmdlinePath != "" {
		t.Errorf("x86: %+v", f)
	}
	if !f.K3sInstalled || f.K3sVersion != "v1.33.5+k3s1" || f.K3sSHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("x86 k3s: %q %q", f.K3sVersion, f.K3sSHA256)
	}
	if f.K3sUnitPath != "/etc/systemd/system/k3s.service" || f.K3sUnit != unit || !f.K3sConfigPresent || f.K3sConfig != config {
		t.Errorf("x86 unit/config: %q %q %q", f.K3sUnitPath, f.K3sUnit, f.K3sConfig)
	}

	// Without sudo the config is unreadable, and Facts says so.
	tg := targetFor(r, x86, testrack.PasswordSudoUser)
	tg.Sudo = boolPtr(false)
	hn := mustConnect(t, ctx, tg, o)
	if f, err = hn.Gather(ctx); err != nil || f.K3sConfig != "" || !f.K3sConfigPresent || len(f.Warnings) != 1 {
		t.Errorf("unprivileged facts: %+v %v", f, err)
	}
}

func TestFanOutDeadHost(t *testing.T) {
	r := testrack.New(t, 8)
	ctx := testCtx(t)
	dead := r.Hosts[5]
	if err := dead.StopSSHD(); err != nil {
		t.Fatal(err)
	}
	var targets []Target
	for _, h := range r.Hosts {
		targets = append(targets, targetFor(r, h, testrack.SudoUser))
	}
	o, _, _ := testOptions(env{})
	var progress testenv.Buffer
	results := FanOut(ctx, targets, FanOutOptions{Concurrency: 4, Connect: o, Progress: NewPlainProgress(&progress)},
		func(ctx context.Context, h *Host) error {
			h.Step("marking")
			if _, err := h.UploadReader(ctx, strings.NewReader(h.Target.Name), int64(len(h.Target.Name)), "/var/lib/rancher/done", FileOptions{Privileged: true}); err != nil {
				return err
			}
			return h.Run(ctx, Sh("echo marked"), RunOptions{})
		})
	if len(results) != 8 {
		t.Fatalf("%d results", len(results))
	}
	for i, res := range results {
		h := r.Hosts[i]
		if res.Node != h.Name {
			t.Errorf("result %d is %s, want %s (target order)", i, res.Node, h.Name)
		}
		if h == dead {
			want := fmt.Sprintf("%s: connect %s:22: connection refused after 3 attempts", h.Name, h.Addr)
			var ce *ConnectError
			if res.Err == nil || res.Err.Error() != want || !errors.As(res.Err, &ce) {
				t.Errorf("dead host: got %v, want %q", res.Err, want)
			}
			continue
		}
		if res.Err != nil || res.BytesSent != int64(len(h.Name)) || res.Duration <= 0 {
			t.Errorf("%s: %+v", h.Name, res)
		}
		if b, _ := h.ReadFile("/var/lib/rancher/done"); string(b) != h.Name {
			t.Errorf("%s: step did not run (%q)", h.Name, b)
		}
	}
	var sum bytes.Buffer
	WriteSummary(&sum, results)
	deadRow := false
	for _, line := range strings.Split(sum.String(), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == dead.Name && f[1] == "FAILED" {
			deadRow = true
		}
	}
	if !strings.Contains(sum.String(), "7 of 8 nodes ok") || !deadRow {
		t.Errorf("summary:\n%s", sum.String())
	}
	p := progress.String()
	for _, s := range []string{r.Hosts[0].Name + " | > marking", r.Hosts[0].Name + " | marked", dead.Name + " | FAILED after"} {
		if !strings.Contains(p, s) {
			t.Errorf("progress lacks %q:\n%s", s, p)
		}
	}
	if err := Errors(results); err == nil || !strings.Contains(err.Error(), dead.Name) {
		t.Errorf("Errors = %v", err)
	}
}

func TestFanOutSerialAndStop(t *testing.T) {
	r := testrack.New(t, 4)
	ctx := testCtx(t)
	var targets []Target
	for _, h := range r.Hosts {
		targets = append(targets, targetFor(r, h, testrack.RootUser))
	}
	o, _, _ := testOptions(env{})

	var mu sync.Mutex
	var order []string
	var running, maxRunning atomic.Int32
	step := func(ctx context.Context, h *Host) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := maxRunning.Load()
			if n <= m || maxRunning.CompareAndSwap(m, n) {
				break
			}
		}
		mu.Lock()
		order = append(order, h.Target.Name)
		mu.Unlock()
		if err := h.Run(ctx, Sh("sleep 0.2"), RunOptions{}); err != nil {
			return err
		}
		if h.Target.Name == r.Hosts[1].Name {
			return h.Run(ctx, Sh("exit 4"), RunOptions{})
		}
		return nil
	}
	results := FanOut(ctx, targets, FanOutOptions{Serial: true, Connect: o}, step)
	want := []string{r.Hosts[0].Name, r.Hosts[1].Name, r.Hosts[2].Name, r.Hosts[3].Name}
	if fmt.Sprint(order) != fmt.Sprint(want) || maxRunning.Load() != 1 {
		t.Errorf("serial: order %v (want %v), at most %d at once", order, want, maxRunning.Load())
	}
	var ee *ExitError
	if !errors.As(results[1].Err, &ee) || results[0].Err != nil || results[2].Err != nil {
		t.Errorf("serial results: %v", results)
	}

	order = nil
	results = FanOut(ctx, targets, FanOutOptions{Serial: true, StopOnError: true, Connect: o}, step)
	if len(order) != 2 || !errors.Is(results[2].Err, errSkipped) || !errors.Is(results[3].Err, errSkipped) {
		t.Errorf("stop on error: ran %v, results %v", order, results)
	}
}

func TestFanOutCancel(t *testing.T) {
	r := testrack.New(t, 4)
	ctx := testCtx(t)
	var targets []Target
	for _, h := range r.Hosts {
		targets = append(targets, targetFor(r, h, testrack.SudoUser))
	}
	local, _ := randomFile(t, 8<<20)
	src, _ := OpenSource(local)
	defer src.Close()
	slow := &Source{r: slowReaderAt{src.r, 2 * time.Millisecond}, size: src.size, sum: src.sum}
	o, _, _ := testOptions(env{})
	cctx, cancel := context.WithCancel(ctx)
	var started atomic.Int32
	// Two at a time: two nodes are cut mid-upload, two never start.
	results := FanOut(cctx, targets, FanOutOptions{Concurrency: 2, Connect: o}, func(ctx context.Context, h *Host) error {
		if started.Add(1) == 2 {
			go func() {
				for h.BytesSent() < 1<<20 {
					time.Sleep(time.Millisecond)
				}
				cancel() // Ctrl-C
			}()
		}
		_, err := h.Upload(ctx, slow, "/usr/local/bin/k3s", FileOptions{Privileged: true})
		return err
	})
	for i, res := range results {
		if !errors.Is(res.Err, context.Canceled) && !errors.Is(res.Err, errSkipped) {
			t.Errorf("%s: %v", res.Node, res.Err)
		}
		if ls := listDir(t, r.Hosts[i], "/usr/local/bin"); ls != "" {
			t.Errorf("%s: cancelled fan-out left %q", res.Node, ls)
		}
	}
	if !errors.Is(results[3].Err, errSkipped) {
		t.Errorf("the last node started after the cancel: %v", results[3].Err)
	}
}
