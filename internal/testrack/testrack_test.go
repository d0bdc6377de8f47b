package testrack

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/homelab/rack/internal/procstat"
	"github.com/homelab/rack/internal/testenv"
)

const crashHelperEnv = "TESTRACK_CRASH_HELPER"

// TestMain doubles as the "crashing test process" of
// TestStaleHostsOfDeadOwnerAreRemoved: with the env var set, the binary
// starts a rack, reports it, and waits to be SIGKILLed.
func TestMain(m *testing.M) {
	testenv.CrashHelper(crashHelperEnv, func() (any, error) {
		r, err := Start(context.Background(), Options{Hosts: 1})
		if err != nil {
			return nil, err
		}
		h := r.Hosts[0]
		return crashReport{h.Name, h.HolderPid(), h.SSHDPid()}, nil
	})
	os.Exit(m.Run())
}

type crashReport struct {
	Name   string `json:"name"`
	Holder int    `json:"holder"`
	SSHD   int    `json:"sshd"`
}

// sshCmd builds a real OpenSSH client command that trusts only knownHosts
// and never prompts, so a host key or login problem fails instead of hangs.
func sshCmd(ctx context.Context, key, knownHosts, user string, h *Host, command string) *exec.Cmd {
	return exec.CommandContext(ctx, "ssh", "-F", "/dev/null",
		"-i", key, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "UserKnownHostsFile="+knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
		"-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
		"-p", strconv.Itoa(h.Port), user+"@"+h.Addr, command)
}

// sshOut runs command on h as user with the rack's plain key and known_hosts.
func sshOut(t *testing.T, r *Rack, h *Host, user, command string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := sshCmd(ctx, r.ClientKey, r.KnownHosts, user, h, command).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func mustSSH(t *testing.T, r *Rack, h *Host, user, command string) string {
	t.Helper()
	out, err := sshOut(t, r, h, user, command)
	if err != nil {
		t.Fatalf("ssh %s@%s (%s) %q: %v: %s", user, h.Addr, h.Name, command, err, out)
	}
	return out
}

func TestLoginsForAllUsers(t *testing.T) {
	t.Parallel()
	r := New(t, 3)
	if len(r.Hosts) != 3 {
		t.Fatalf("got %d hosts", len(r.Hosts))
	}
	for _, h := range r.Hosts {
		for _, u := range Users {
			if got := mustSSH(t, r, h, u, "id -un; hostname"); got != u+"\n"+h.Name {
				t.Errorf("%s@%s: got %q", u, h.Name, got)
			}
		}
	}
	h := r.Hosts[0]

	t.Run("sudo", func(t *testing.T) {
		if got := mustSSH(t, r, h, SudoUser, "sudo -n id -u"); got != "0" {
			t.Errorf("%s: sudo -n id -u = %q", SudoUser, got)
		}
		if out, err := sshOut(t, r, h, PasswordSudoUser, "sudo -n true"); err == nil {
			t.Errorf("%s: sudo without password succeeded: %s", PasswordSudoUser, out)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := sshCmd(ctx, r.ClientKey, r.KnownHosts, PasswordSudoUser, h, "sudo -S -p '' id -u")
		cmd.Stdin = strings.NewReader(r.SudoPassword + "\n")
		if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "0" {
			t.Errorf("%s: sudo -S with SudoPassword: %v: %s", PasswordSudoUser, err, out)
		}
		cmd = sshCmd(ctx, r.ClientKey, r.KnownHosts, PasswordSudoUser, h, "sudo -S -p '' true")
		cmd.Stdin = strings.NewReader("wrong-password\n")
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("%s: sudo accepted a wrong password: %s", PasswordSudoUser, out)
		}
		// The password exists only inside the hosts.
		if b, _ := os.ReadFile("/etc/shadow"); bytes.Contains(b, []byte(PasswordSudoUser+":$")) {
			t.Errorf("/etc/shadow of the machine gives %s a password", PasswordSudoUser)
		}
	})

	t.Run("encrypted key with Go client", func(t *testing.T) {
		pem, err := os.ReadFile(r.EncryptedClientKey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ssh.ParsePrivateKey(pem); err == nil {
			t.Fatal("encrypted key parses without a passphrase")
		}
		signer, err := ssh.ParsePrivateKeyWithPassphrase(pem, []byte(r.KeyPassphrase))
		if err != nil {
			t.Fatal(err)
		}
		cb, err := knownhosts.New(r.KnownHosts)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range Users {
			c, err := ssh.Dial("tcp", net.JoinHostPort(h.Addr, "22"), &ssh.ClientConfig{
				User: u, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: cb, Timeout: 10 * time.Second,
			})
			if err != nil {
				t.Fatalf("%s: %v", u, err)
			}
			c.Close()
		}
	})

	t.Run("hashed known_hosts and fingerprint", func(t *testing.T) {
		kh := filepath.Join(t.TempDir(), "known_hosts")
		if err := r.WriteKnownHosts(kh, true); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(kh)
		if bytes.Contains(b, []byte(h.Addr)) || !bytes.HasPrefix(b, []byte("|1|")) {
			t.Fatalf("not hashed:\n%s", b)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, err := sshCmd(ctx, r.ClientKey, kh, RootUser, h, "true").CombinedOutput(); err != nil {
			t.Fatalf("ssh with hashed known_hosts: %v: %s", err, out)
		}
		out, err := exec.Command("ssh-keygen", "-l", "-f", filepath.Join(h.dir, "ssh_host_ed25519_key.pub")).Output()
		if err != nil || !strings.Contains(string(out), h.Fingerprint()) {
			t.Errorf("ssh-keygen -l says %q (%v), Fingerprint() %q", out, err, h.Fingerprint())
		}
	})

	t.Run("sftp", func(t *testing.T) {
		src := filepath.Join(t.TempDir(), "payload")
		if err := os.WriteFile(src, []byte("over sftp\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// OpenSSH 9 scp speaks SFTP, so this exercises the Subsystem line.
		out, err := exec.CommandContext(ctx, "scp", "-F", "/dev/null", "-i", r.ClientKey,
			"-o", "IdentitiesOnly=yes", "-o", "UserKnownHostsFile="+r.KnownHosts,
			"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
			src, SudoUser+"@"+h.Addr+":/tmp/payload").CombinedOutput()
		if err != nil {
			t.Fatalf("scp: %v: %s", err, out)
		}
		if got, err := h.ReadFile("/tmp/payload"); err != nil || string(got) != "over sftp\n" {
			t.Errorf("ReadFile after scp: %q, %v", got, err)
		}
	})
}

func TestHostsAreIsolated(t *testing.T) {
	t.Parallel()
	r := New(t, 3)
	a, b := r.Hosts[0], r.Hosts[1]
	marker := "rack-testrack-marker-" + r.ID
	for _, dir := range []string{"/usr/local/bin", "/etc/rancher/k3s", "/var/lib/rancher", "/etc/systemd/system", "/boot/firmware", "/tmp", "/home/" + SudoUser} {
		path := dir + "/" + marker
		mustSSH(t, r, a, RootUser, "mkdir -p "+dir+" && echo hi > "+path)
		if ok, err := a.FileExists(path); err != nil || !ok {
			t.Fatalf("%s: FileExists(%s) = %v, %v after writing it over ssh", a.Name, path, ok, err)
		}
		if ok, err := b.FileExists(path); err != nil || ok {
			t.Errorf("%s sees %s written on %s (%v)", b.Name, path, a.Name, err)
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the machine's own root fs sees %s (%v)", path, err)
		}
	}
	if err := b.WriteFile("/etc/rancher/k3s/config.yaml", []byte("token: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := mustSSH(t, r, b, RootUser, "stat -c %a /etc/rancher/k3s/config.yaml && cat /etc/rancher/k3s/config.yaml"); got != "600\ntoken: x" {
		t.Errorf("WriteFile then ssh cat: %q", got)
	}
	if _, err := a.ReadFile("/etc/rancher/k3s/config.yaml"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile of a file only %s has: %v", b.Name, err)
	}
	if out, err := a.Exec(context.Background(), "hostname; ip -4 -o addr show eth0; ip -o link show lo"); err != nil ||
		!strings.HasPrefix(string(out), a.Name+"\n") || !strings.Contains(string(out), a.Addr+"/16") ||
		!strings.Contains(string(out), "LOWER_UP") {
		t.Errorf("Exec in %s: %q, %v", a.Name, out, err)
	}
	// Hosts reach each other across the bridge (bastion setups need it).
	if _, err := a.Exec(context.Background(), "bash -c 'exec 3<>/dev/tcp/"+b.Addr+"/22'"); err != nil {
		t.Errorf("%s cannot reach %s:22: %v", a.Name, b.Addr, err)
	}
}

func TestMakePi(t *testing.T) {
	t.Parallel()
	r := New(t, 2, WithPi(1))
	x86, pi := r.Hosts[0], r.Hosts[1]
	for _, u := range []string{RootUser, SudoUser} {
		if got := mustSSH(t, r, pi, u, "uname -m"); got != "aarch64" {
			t.Errorf("%s on Pi: uname -m = %q", u, got)
		}
		if got := mustSSH(t, r, x86, u, "uname -m"); got != "x86_64" {
			t.Errorf("%s on x86: uname -m = %q", u, got)
		}
	}
	if got := mustSSH(t, r, pi, RootUser, "uname -a; uname -s; arch"); !strings.Contains(got, " aarch64 ") ||
		strings.Contains(got, "x86_64") || !strings.HasSuffix(got, "\nLinux\naarch64") {
		t.Errorf("Pi uname -a/-s/arch:\n%s", got)
	}
	model, err := pi.ReadFile("/sys/firmware/devicetree/base/model")
	if err != nil || string(model) != DefaultPiModel+"\x00" {
		t.Errorf("model = %q, %v", model, err)
	}
	if got := mustSSH(t, r, pi, SudoUser, "tr -d '\\0' < /sys/firmware/devicetree/base/model; echo; cat /boot/firmware/cmdline.txt; . /etc/os-release; echo $VERSION_CODENAME"); got != DefaultPiModel+"\n"+strings.TrimSpace(PiCmdline)+"\nbookworm" {
		t.Errorf("Pi facts over ssh:\n%s", got)
	}
	if ok, _ := x86.FileExists("/sys/firmware/devicetree/base/model"); ok {
		t.Errorf("x86 host has a device-tree model")
	}
	if err := pi.MakePi("Raspberry Pi 5 Model B Rev 1.0"); err != nil {
		t.Fatal(err)
	}
	if model, _ := pi.ReadFile("/sys/firmware/devicetree/base/model"); string(model) != "Raspberry Pi 5 Model B Rev 1.0\x00" {
		t.Errorf("second MakePi: model = %q", model)
	}
	if err := pi.MakeX86(); err != nil {
		t.Fatal(err)
	}
	if got := mustSSH(t, r, pi, RootUser, "uname -m; test -e /sys/firmware/devicetree || echo no-dt; test -e /boot/firmware/cmdline.txt || echo no-cmdline"); got != "x86_64\nno-dt\nno-cmdline" {
		t.Errorf("after MakeX86:\n%s", got)
	}
	own, _ := os.ReadFile("/etc/os-release")
	if got, err := pi.ReadFile("/etc/os-release"); err != nil || !bytes.Equal(got, own) {
		t.Errorf("after MakeX86, os-release is not the machine's: %v\n%s", err, got)
	}
}

func TestRotateHostKey(t *testing.T) {
	t.Parallel()
	r := New(t, 1)
	h := r.Hosts[0]
	oldFP := h.Fingerprint()
	if err := h.RotateHostKey(); err != nil {
		t.Fatal(err)
	}
	if h.Fingerprint() == oldFP {
		t.Fatal("fingerprint unchanged")
	}
	out, err := sshOut(t, r, h, RootUser, "true")
	if err == nil || !strings.Contains(out, "REMOTE HOST IDENTIFICATION HAS CHANGED") {
		t.Fatalf("strict ssh with the old known_hosts: err=%v, output:\n%s", err, out)
	}
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, []byte(h.KnownHostsLine()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := sshCmd(ctx, r.ClientKey, kh, RootUser, h, "true").CombinedOutput(); err != nil {
		t.Fatalf("ssh with the new key: %v: %s", err, out)
	}
}

func TestKillStartSSHD(t *testing.T) {
	t.Parallel()
	r := New(t, 1)
	h := r.Hosts[0]
	mustSSH(t, r, h, RootUser, "echo survives > /usr/local/bin/state")

	// A session in progress must die with a crash.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	session := sshCmd(ctx, r.ClientKey, r.KnownHosts, RootUser, h, "echo started; exec sleep 300")
	stdout, _ := session.StdoutPipe()
	if err := session.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "started\n" {
		t.Fatalf("session: %q, %v", line, err)
	}
	sleepPid := findPid(t, h, "sleep 300")
	oldPid := h.SSHDPid()
	if err := h.KillSSHD(); err != nil {
		t.Fatal(err)
	}
	if h.SSHDPid() != 0 || procstat.Alive(oldPid, 0) || procstat.Alive(sleepPid, 0) {
		t.Errorf("after KillSSHD: SSHDPid=%d, old listener alive=%v, session alive=%v", h.SSHDPid(), procstat.Alive(oldPid, 0), procstat.Alive(sleepPid, 0))
	}
	if err := session.Wait(); err == nil {
		t.Error("ssh session survived KillSSHD")
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(h.Addr, "22"), 2*time.Second); err == nil {
		c.Close()
		t.Error("port 22 still accepts connections")
	}
	if got, err := h.ReadFile("/usr/local/bin/state"); err != nil || string(got) != "survives\n" {
		t.Errorf("file after crash: %q, %v", got, err)
	}
	if err := h.StartSSHD(); err != nil {
		t.Fatal(err)
	}
	if got := mustSSH(t, r, h, SudoUser, "cat /usr/local/bin/state"); got != "survives" {
		t.Errorf("after StartSSHD: %q", got)
	}
	if err := h.StartSSHD(); err == nil {
		t.Error("StartSSHD twice did not fail")
	}

	// A graceful stop leaves sessions alone, like systemctl stop ssh.
	session = sshCmd(ctx, r.ClientKey, r.KnownHosts, RootUser, h, "echo started; exec sleep 301")
	stdout, _ = session.StdoutPipe()
	if err := session.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "started\n" {
		t.Fatalf("session: %q, %v", line, err)
	}
	sleepPid = findPid(t, h, "sleep 301")
	if err := h.StopSSHD(); err != nil {
		t.Fatal(err)
	}
	if !procstat.Alive(sleepPid, 0) {
		t.Error("StopSSHD ended an established session")
	}
	if err := h.RestartSSHD(); err != nil {
		t.Fatal(err)
	}
	mustSSH(t, r, h, RootUser, "true")
	_ = session.Process.Kill()
	_ = session.Wait()
}

// findPid returns the PID of the process in h whose command line is cmdline.
func findPid(t *testing.T, h *Host, cmdline string) int {
	t.Helper()
	id, err := statNS("/proc/" + strconv.Itoa(h.HolderPid()) + "/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	// Polls: a command started in the background over ssh may not have
	// exec'd yet when ssh returns.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, pid := range pidsInNS("mnt", id) {
			b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
			if strings.Join(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"), " ") == cmdline {
				return pid
			}
		}
	}
	t.Fatalf("no %q in %s", cmdline, h.Name)
	return 0
}

func TestConcurrentRacksGetDistinctHosts(t *testing.T) {
	t.Parallel()
	if err := Supported(); err != nil {
		t.Skip(err)
	}
	var wg sync.WaitGroup
	racks := make([]*Rack, 2)
	errs := make([]error, 2)
	for i := range racks {
		wg.Go(func() {
			racks[i], errs[i] = Start(context.Background(), Options{Hosts: 3})
		})
	}
	wg.Wait()
	for i, r := range racks {
		if r != nil && errs[i] == nil {
			t.Cleanup(func() {
				if err := r.Close(); err != nil {
					t.Error(err)
				}
			})
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range racks {
		for _, h := range r.Hosts {
			if seen[h.Addr] || seen[h.Name] {
				t.Errorf("duplicate host %s %s", h.Name, h.Addr)
			}
			seen[h.Addr], seen[h.Name] = true, true
			mustSSH(t, r, h, RootUser, "true")
		}
	}
	// One rack's key must not open the other's hosts.
	if out, err := sshOut(t, racks[0], racks[1].Hosts[0], RootUser, "true"); err == nil {
		t.Errorf("rack 0's key logs into rack 1: %s", out)
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	t.Parallel()
	if err := Supported(); err != nil {
		t.Skip(err)
	}
	r, err := Start(context.Background(), Options{Hosts: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() }) // when a check fails before the Close under test
	type proc struct {
		pid   int
		start uint64
	}
	var procs []proc
	add := func(pid int) {
		p, err := readProc(pid)
		if err != nil {
			t.Fatalf("pid %d: %v", pid, err)
		}
		procs = append(procs, proc{pid, p.start})
	}
	for _, h := range r.Hosts {
		add(h.HolderPid())
		add(h.SSHDPid())
	}
	// A daemon started over ssh (detached from the session) must go too.
	mustSSH(t, r, r.Hosts[0], RootUser, "setsid sleep 302 </dev/null >/dev/null 2>&1 &")
	add(findPid(t, r.Hosts[0], "sleep 302"))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	netns, _ := exec.Command("ip", "netns", "list").Output()
	links, _ := exec.Command("ip", "-o", "link").Output()
	for _, h := range r.Hosts {
		// A concurrent rack (another test package) may already have taken
		// the name again; that is not a leftover. Teardown removes the
		// registry entry last, so an entry of another rack proves reuse.
		e, err := readEntry(h.Name)
		if err == nil && e.RackID == r.ID {
			t.Errorf("registry entry %s left", h.dir)
		}
		if err == nil && e.RackID != r.ID {
			continue
		}
		if regexp.MustCompile(`(?m)^` + h.Name + `( |$)`).Match(netns) {
			t.Errorf("netns %s left:\n%s", h.Name, netns)
		}
		if regexp.MustCompile(`(?m)^\d+: ` + h.Name + `[@:]`).Match(links) {
			t.Errorf("link %s left:\n%s", h.Name, links)
		}
	}
	// Orphans of killed processes stay zombies until init reaps them; they
	// run nothing and hold no namespace, so they count as gone.
	for _, p := range procs {
		if !procstat.WaitGone(p.pid, p.start, 5*time.Second) {
			t.Errorf("pid %d left", p.pid)
		}
	}
	if _, err := os.Stat(r.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Dir %s left", r.Dir)
	}
}

func TestStaleHostsOfDeadOwnerAreRemoved(t *testing.T) {
	t.Parallel()
	if err := Supported(); err != nil {
		t.Skip(err)
	}
	// A real crash: another process starts a host and is SIGKILLed, so its
	// Close never runs.
	var crashed crashReport
	helper := testenv.StartCrashHelper(t, context.Background(), crashHelperEnv, &crashed)
	deadPid := helper.Process.Pid
	deadProc, _ := readProc(deadPid)
	testenv.KillCrashHelper(helper)

	// A hand-made entry too: its owner is the same dead process, and
	// something still runs in its netns.
	lock, err := lockMachine(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fakes, err := reserve(1, "fake-"+strconv.Itoa(os.Getpid()), false)
	if err == nil {
		fakes[0].OwnerPID, fakes[0].OwnerStart = deadPid, deadProc.start
		err = writeEntry(fakes[0])
	}
	lock.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	fake := fakes[0]
	if err := run(context.Background(), "ip", "netns", "add", fake.Name); err != nil {
		t.Fatal(err)
	}
	squatter := exec.Command("ip", "netns", "exec", fake.Name, "sleep", "303")
	if err := squatter.Start(); err != nil {
		t.Fatal(err)
	}
	squatterDone := make(chan struct{})
	go func() { _ = squatter.Wait(); close(squatterDone) }()
	stale := []string{crashed.Name, fake.Name}
	for _, name := range stale {
		if _, err := os.Stat("/run/netns/" + name); err != nil {
			t.Fatalf("setup: netns %s missing: %v", name, err)
		}
	}

	// The next Start, in this live process, sweeps both. (So may a
	// concurrent test's Start, which may then reuse the names.)
	New(t, 1)
	for _, name := range stale {
		// Teardown removes the registry entry only after the netns, so a
		// netns without an entry, or under a new owner's, is a new one.
		e, err := readEntry(name)
		if err == nil && (e.OwnerPID == deadPid || e.RackID == fake.RackID) {
			t.Errorf("registry entry %s survived: %+v", name, e)
		} else if _, nserr := os.Stat("/run/netns/" + name); nserr == nil && err != nil {
			t.Errorf("netns %s survived without a registry entry", name)
		}
	}
	if procstat.Alive(crashed.Holder, 0) || procstat.Alive(crashed.SSHD, 0) {
		t.Errorf("crashed host's holder %d or sshd %d still alive", crashed.Holder, crashed.SSHD)
	}
	select {
	case <-squatterDone:
	case <-time.After(10 * time.Second):
		t.Error("process in the stale netns survived")
		_ = squatter.Process.Signal(syscall.SIGKILL)
	}
}

func TestHostAddressing(t *testing.T) {
	for idx, want := range map[int]string{1: "198.18.0.2", 253: "198.18.0.254", 255: "198.18.1.0", 65533: "198.18.255.254"} {
		if got := hostAddr(idx); got != want {
			t.Errorf("hostAddr(%d) = %s, want %s", idx, got, want)
		}
	}
	if usableIdx(254) || usableIdx(255) || !usableIdx(256) {
		t.Error("usableIdx must skip .255 and .0")
	}
	if len(NamePrefix+strconv.Itoa(maxHostIdx)) > 15 {
		t.Error("host names do not fit IFNAMSIZ")
	}
}

// BenchmarkStart16 measures bringing up (and, untimed, tearing down) a
// 16-host rack.
func BenchmarkStart16(b *testing.B) {
	if err := Supported(); err != nil {
		b.Skip(err)
	}
	for b.Loop() {
		r, err := Start(context.Background(), Options{Hosts: 16})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := r.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// TestSeenByHosts: paths below the hosts' private folders are refused with
// what to do; the rest of the machine's files are seen by every host.
func TestSeenByHosts(t *testing.T) {
	for path, hidden := range map[string]bool{
		"/tmp/ci/main/.cache/controlplane/kube-apiserver": true,
		"/root/rack/.cache/kine":                          true,
		"/home":                                           true,
		"/var/tmp/x":                                      true,
		"/work/main/.cache/controlplane/kube-apiserver": false,
		"/var/cache/rack-test/tmp/ci/main/.cache/kine":  false,
		"/tmpfoo/kine":  false,
		"/usr/bin/etcd": false,
	} {
		err := SeenByHosts(path)
		if (err != nil) != hidden {
			t.Errorf("SeenByHosts(%s) = %v, want hidden %v", path, err, hidden)
		}
		if err != nil && !strings.Contains(err.Error(), "CACHE_DIR") {
			t.Errorf("SeenByHosts(%s): %v does not say what to do", path, err)
		}
	}
}
