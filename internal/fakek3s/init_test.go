package fakek3s

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/internal/testrack"
)

// demoUnit exercises what the shim parses: continuation lines, prefixes,
// Environment= with quoting, an optional EnvironmentFile with %N, and an
// ExecStartPre that fails but is allowed to.
const demoUnit = `[Unit]
Description=Demo service
After=network-online.target

[Service]
Type=simple
Environment="GREETING=hello world" OTHER=1
EnvironmentFile=-/etc/systemd/system/%N.env
EnvironmentFile=-/etc/does-not-exist
ExecStartPre=-/bin/false
ExecStart=/bin/sh -c \
    'echo "started ${GREETING} $FROMFILE"; exec sleep 1000'
Restart=always
RestartSec=5s
KillMode=process

[Install]
WantedBy=multi-user.target
`

// notifyFailUnit never says READY=1 and exits 1: its start job fails.
const notifyFailUnit = `[Service]
Type=notify
ExecStart=/bin/sh -c 'echo about to fail; exit 1'
`

// notifyReadyScript says READY=1 on $NOTIFY_SOCKET from its own PID and,
// given "stay", keeps running.
const notifyReadyScript = `#!/usr/bin/perl
use Socket;
socket(my $s, AF_UNIX, SOCK_DGRAM, 0) or die "socket: $!";
send($s, "READY=1", 0, pack_sockaddr_un($ENV{NOTIFY_SOCKET})) or die "send: $!";
sleep 1000 if @ARGV && $ARGV[0] eq "stay";
`

// childNotifyUnit's READY=1 comes from a child of its main process, as
// etcd's does under the k3s stand-in: systemd (NotifyAccess=main) ignores
// it, and the start job times out.
const childNotifyUnit = `[Service]
Type=notify
TimeoutStartSec=3
ExecStart=/bin/sh -c '/usr/local/bin/notify-ready; exec sleep 1000'
`

func exec1(t *testing.T, h *testrack.Host, script string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := h.Exec(ctx, script)
	if err != nil {
		var ce *testrack.CmdError
		if errors.As(err, &ce) && ce.ExitCode() >= 0 {
			msg := strings.TrimSpace(string(out))
			if msg == "" {
				msg = ce.Stderr
			}
			return msg, ce.ExitCode()
		}
		t.Fatalf("%s: %v", script, err)
	}
	return strings.TrimSpace(string(out)), 0
}

func mustExec(t *testing.T, h *testrack.Host, script string) string {
	t.Helper()
	out, code := exec1(t, h, script)
	if code != 0 {
		t.Fatalf("%s: exit %d: %s", script, code, out)
	}
	return out
}

func TestInitShim(t *testing.T) {
	t.Parallel()
	hadMarker := fileExists("/run/systemd/system")
	r := testrack.New(t, 1)
	h := r.Hosts[0]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := InstallInit(ctx, h); err != nil {
		t.Fatal(err)
	}

	// The host looks like systemd; the machine does not change.
	mustExec(t, h, "test -d /run/systemd/system")
	if !hadMarker && fileExists("/run/systemd/system") {
		t.Error("/run/systemd/system appeared outside the test host")
	}
	// What a rack user runs through sudo finds the shim.
	if got := mustSSH(t, r, h, testrack.SudoUser, "sudo -n sh -c 'command -v systemctl'"); got != SystemctlPath {
		t.Errorf("sudo finds systemctl at %q, want %s", got, SystemctlPath)
	}

	if err := h.WriteFile("/etc/systemd/system/demo.service", []byte(demoUnit), 0o644); err != nil {
		t.Fatal(err)
	}
	// Not /etc/default: outside the host's private folders it would be the
	// machine's.
	if err := h.WriteFile("/etc/systemd/system/demo.env", []byte("FROMFILE='from file'\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	if out, code := exec1(t, h, "systemctl is-active demo"); code != 3 || out != "inactive" {
		t.Errorf("is-active before start: %q, exit %d; want inactive, 3", out, code)
	}
	if out, code := exec1(t, h, "systemctl is-enabled demo"); code != 1 || out != "disabled" {
		t.Errorf("is-enabled before enable: %q, exit %d; want disabled, 1", out, code)
	}
	out := mustSSH(t, r, h, testrack.SudoUser, "sudo systemctl enable --now demo 2>&1")
	if !strings.Contains(out, "multi-user.target.wants/demo.service") {
		t.Errorf("enable output %q does not mention the symlink", out)
	}
	mustExec(t, h, "systemctl is-active --quiet demo")
	if got := mustExec(t, h, "systemctl is-enabled demo"); got != "enabled" {
		t.Errorf("is-enabled: %q", got)
	}
	testenv.WaitFor(t, ctx, "demo logged its start", func() (bool, string) {
		log := UnitLog(ctx, h, "demo")
		return strings.Contains(log, "started hello world from file"), log
	})
	if n := starts(t, h, "demo"); n != 1 {
		t.Errorf("starts after enable --now: %d", n)
	}
	if got := mustExec(t, h, "systemctl show -p ActiveState,UnitFileState demo"); got != "ActiveState=active\nUnitFileState=enabled" {
		t.Errorf("show: %q", got)
	}
	if out := mustExec(t, h, "systemctl status demo"); !strings.Contains(out, "Active: active (running)") {
		t.Errorf("status: %s", out)
	}

	mustExec(t, h, "systemctl restart demo.service")
	if n := starts(t, h, "demo"); n != 2 {
		t.Errorf("starts after restart: %d", n)
	}
	pid := mustExec(t, h, "systemctl show -p MainPID --value demo")

	// Restart=always brings a killed service back (after RestartSec).
	mustExec(t, h, "kill -9 "+pid)
	testenv.WaitFor(t, ctx, "demo restarted by Restart=always", func() (bool, string) {
		n := starts(t, h, "demo")
		return n == 3, strconv.Itoa(n)
	})

	mustExec(t, h, "systemctl stop demo")
	if out, code := exec1(t, h, "systemctl is-active demo"); code != 3 || out != "inactive" {
		t.Errorf("is-active after stop: %q, exit %d", out, code)
	}
	if _, code := exec1(t, h, "pgrep -f 'sleep [1]000'"); code == 0 {
		t.Error("the service's process survives stop")
	}

	// A Type=notify service that dies before READY=1 fails its start job.
	if err := h.WriteFile("/etc/systemd/system/broken.service", []byte(notifyFailUnit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := exec1(t, h, "systemctl start broken")
	if code != 1 || !strings.Contains(out, "Job for broken.service failed") {
		t.Errorf("start broken: exit %d: %q", code, out)
	}
	if out, code := exec1(t, h, "systemctl is-active broken"); code != 3 || out != "failed" {
		t.Errorf("is-active broken: %q, exit %d; want failed, 3", out, code)
	}
	// READY=1 counts only from the main process, unless NotifyAccess=all.
	if err := h.WriteFile("/usr/local/bin/notify-ready", []byte(notifyReadyScript), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, unit := range map[string]string{
		"childnotify": childNotifyUnit,
		"mainnotify":  strings.Replace(childNotifyUnit, "/bin/sh -c '/usr/local/bin/notify-ready; exec sleep 1000'", "/usr/local/bin/notify-ready stay", 1),
		"allnotify":   strings.Replace(childNotifyUnit, "Type=notify", "Type=notify\nNotifyAccess=all", 1),
	} {
		if err := h.WriteFile("/etc/systemd/system/"+name+".service", []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, code = exec1(t, h, "systemctl start childnotify")
	if code != 1 || !strings.Contains(out, "failed because a timeout was exceeded") {
		t.Errorf("start childnotify (READY=1 from a child): exit %d: %q; want the start job to time out", code, out)
	}
	if log := mustExec(t, h, "journalctl -u childnotify --no-pager"); !strings.Contains(log, "but reception only permitted for main PID") {
		t.Errorf("journalctl -u childnotify does not say why READY=1 was ignored: %q", log)
	}
	for _, name := range []string{"mainnotify", "allnotify"} {
		if out, code := exec1(t, h, "systemctl start "+name+" && systemctl is-active "+name); code != 0 || out != "active" {
			t.Errorf("start %s: exit %d: %q", name, code, out)
		}
		mustExec(t, h, "systemctl stop "+name)
	}

	if out, code := exec1(t, h, "systemctl start nosuch"); code != 5 || !strings.Contains(out, "Unit nosuch.service not found") {
		t.Errorf("start nosuch: exit %d: %q", code, out)
	}
	if log := mustExec(t, h, "journalctl -u broken --no-pager"); !strings.Contains(log, "about to fail") {
		t.Errorf("journalctl -u broken: %q", log)
	}

	t.Run("reboot", func(t *testing.T) {
		mustExec(t, h, "systemctl start demo")
		before := starts(t, h, "demo")
		oldSSHD := h.SSHDPid()
		// Over ssh, like rack: the session may be cut, as with a real reboot.
		_, _ = sshOut(t, r, h, testrack.SudoUser, "sudo systemctl reboot")
		testenv.WaitFor(t, ctx, "boot counter 1", func() (bool, string) {
			n, err := Boots(ctx, h)
			return n == 1, strconv.Itoa(n) + errString(err)
		})
		testenv.WaitFor(t, ctx, "sshd back", func() (bool, string) {
			err := sshBanner(h.Addr)
			return err == nil, errString(err)
		})
		t.Log(mustExec(t, h, "cat "+InitStateDir+"/reboot.log"))
		if alive := h.SSHDPid(); alive != 0 || oldSSHD == 0 {
			t.Errorf("sshd listener of testrack (pid %d) still running after reboot: %d", oldSSHD, alive)
		}
		testenv.WaitFor(t, ctx, "demo active again", func() (bool, string) {
			out, code := exec1(t, h, "systemctl is-active demo")
			return code == 0, out
		})
		if n := starts(t, h, "demo"); n != before+1 {
			t.Errorf("starts after reboot: %d, want %d", n, before+1)
		}
		// ssh logins work again (the restarted sshd has the same config).
		if got := mustSSH(t, r, h, testrack.SudoUser, "sudo systemctl is-active demo"); got != "active" {
			t.Errorf("after reboot over ssh: %q", got)
		}
		// The shim can be installed again after a reboot (sshd is no longer
		// testrack's child, sshd.env still holds).
		if err := InstallInit(ctx, h); err != nil {
			t.Errorf("InstallInit after reboot: %v", err)
		}
	})
}

func starts(t *testing.T, h *testrack.Host, unit string) int {
	t.Helper()
	n, err := Starts(context.Background(), h, unit)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return " " + err.Error()
}

// sshBanner checks that sshd greets on the host's port 22.
func sshBanner(addr string) error {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, "22"), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4)
	if _, err := c.Read(buf); err != nil {
		return err
	}
	if string(buf) != "SSH-" {
		return errors.New("no SSH banner")
	}
	return nil
}

// sshOut runs command on h as user with the real OpenSSH client.
func sshOut(t *testing.T, r *testrack.Rack, h *testrack.Host, user, command string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ssh", "-F", "/dev/null",
		"-i", r.ClientKey, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "UserKnownHostsFile="+r.KnownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
		"-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
		"-p", strconv.Itoa(h.Port), user+"@"+h.Addr, command).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func mustSSH(t *testing.T, r *testrack.Rack, h *testrack.Host, user, command string) string {
	t.Helper()
	out, err := sshOut(t, r, h, user, command)
	if err != nil {
		t.Fatalf("ssh %s@%s %q: %v: %s", user, h.Addr, command, err, out)
	}
	return out
}
