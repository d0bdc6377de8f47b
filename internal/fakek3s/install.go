package fakek3s

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/homelab/rack/nodes"

	"github.com/homelab/rack/internal/fakek3s/cpfile"
	"github.com/homelab/rack/internal/testcluster"
	"github.com/homelab/rack/internal/testpki"
	"github.com/homelab/rack/internal/testrack"
)

// Host is what the helpers need of a test host; *testrack.Host has it.
type Host interface {
	Exec(ctx context.Context, script string) ([]byte, error)
	WriteFile(path string, data []byte, mode os.FileMode) error
	ReadFile(path string) ([]byte, error)
	// SSHDPid is the host's sshd listener, 0 when it is not running.
	SSHDPid() int
}

// Paths on a test host.
const (
	// SystemctlPath is where InstallInit puts the shim: a login shell's
	// PATH and sudo's secure_path search /usr/local/bin before /usr/bin.
	SystemctlPath = "/usr/local/bin/systemctl"
	// InitStateDir holds the shim's per-host state: unit state, start
	// counters (<unit>.starts), logs (<unit>.log), the boot counter
	// (boots) and sshd.env.
	InitStateDir = "/etc/systemd/system/.fakeinit"
)

// InstallInit makes a test host look like a systemd machine: the systemctl
// shim (and journalctl, the same binary) in /usr/local/bin, and
// /run/systemd/system, which is how k3s's installer and rack tell that
// systemd runs. /run/systemd gets a tmpfs of its own inside the host's
// mount namespace, so neither the machine nor other hosts see the marker.
// It also records how to restart the host's sshd, for `systemctl reboot`.
// Calling it again updates the shim.
func InstallInit(ctx context.Context, h Host) error {
	bin, err := BuildInit(ctx)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	// Beside it first, then renamed over: running supervisors keep the
	// old binary busy, and a rename is atomic for anyone calling it.
	tmp := SystemctlPath + ".new"
	if err := h.WriteFile(tmp, data, 0o755); err != nil {
		return err
	}
	if _, err := h.Exec(ctx, `set -e
mv -f `+tmp+` `+SystemctlPath+`
mkdir -p /run/systemd
mountpoint -q /run/systemd || mount -t tmpfs -o mode=0755 fakeinit /run/systemd
mkdir -p /run/systemd/system `+InitStateDir+`
ln -sf systemctl /usr/local/bin/journalctl
`); err != nil {
		return fmt.Errorf("fakek3s: installing the init shim: %w", err)
	}
	envPath := InitStateDir + "/sshd.env"
	pid := h.SSHDPid()
	if pid == 0 {
		// sshd was restarted by an earlier simulated reboot and is no longer
		// the test rack's child: the recorded paths still hold.
		if _, err := h.ReadFile(envPath); err == nil {
			return nil
		}
		return errors.New("fakek3s: the host's sshd is not running, so a reboot could not restart it")
	}
	env, err := sshdEnv(pid)
	if err != nil {
		return err
	}
	return h.WriteFile(envPath, env, 0o644)
}

// sshdEnv recovers the sshd config (-f) from the listener's command line
// and its pid file from the config, as lines for sshd.env.
func sshdEnv(pid int) ([]byte, error) {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, err
	}
	// sshd rewrites its process title ("sshd: /usr/sbin/sshd -D -f
	// /path/sshd_config [listener] …"), which leaves one string rather than
	// NUL-separated arguments: split on both.
	args := strings.Fields(strings.ReplaceAll(string(cmdline), "\x00", " "))
	config := ""
	for i, a := range args {
		if a == "-f" && i+1 < len(args) {
			config = args[i+1]
		} else if c, ok := strings.CutPrefix(a, "-f"); ok && c != "" {
			config = c
		}
	}
	// Never guess /etc/ssh/sshd_config: restarting the machine's own sshd
	// configuration inside a test host would be wrong in subtle ways.
	if config == "" {
		return nil, fmt.Errorf("fakek3s: cannot find the config file (-f) in the command line of sshd (pid %d): %q", pid, cmdline)
	}
	pidFile := "/run/sshd.pid"
	if f, err := os.Open(config); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 2 && strings.EqualFold(fields[0], "PidFile") {
				pidFile = fields[1]
			}
		}
		f.Close()
	}
	if !path.IsAbs(config) {
		return nil, fmt.Errorf("fakek3s: sshd (pid %d) runs with a relative config path %q", pid, config)
	}
	return fmt.Appendf(nil, "SSHD_PIDFILE=%s\nSSHD_CONFIG=%s\n", pidFile, config), nil
}

// WriteControlPlane writes the test rack's description the fake k3s reads
// (cpfile.DefaultPath) on a host. rack never touches this file.
func WriteControlPlane(h Host, cp *cpfile.ControlPlane) error {
	return h.WriteFile(cpfile.DefaultPath, cp.Marshal(), 0o600)
}

// NewControlPlane makes a cluster's secrets (CA, admin certificate, service
// account keys) and names the binaries its servers run: what k3s' first
// server generates and keeps in its datastore for the others.
func NewControlPlane(b testcluster.Binaries) (*cpfile.ControlPlane, error) {
	for _, p := range []string{b.Etcd, b.Etcdctl, b.Etcdutl, b.Kine, b.APIServer, b.ControllerManager, b.Scheduler, b.Kubelet, b.KubeProxy} {
		if err := testrack.SeenByHosts(p); err != nil {
			return nil, err
		}
	}
	ca, err := testpki.NewCA("k3s-server-ca")
	if err != nil {
		return nil, err
	}
	admin, err := ca.Issue(testpki.Spec{CN: "system:admin", Orgs: []string{"system:masters"}})
	if err != nil {
		return nil, err
	}
	saKey, saPub, err := testpki.ServiceAccountKey()
	if err != nil {
		return nil, err
	}
	return &cpfile.ControlPlane{
		CAPEM: string(ca.CertPEM), CAKeyPEM: string(ca.KeyPEM),
		CertPEM: string(admin.CertPEM), KeyPEM: string(admin.KeyPEM),
		SAKeyPEM: string(saKey), SAPubPEM: string(saPub),
		Bin: cpfile.Binaries{Etcd: b.Etcd, Etcdctl: b.Etcdctl, Etcdutl: b.Etcdutl, Kine: b.Kine,
			APIServer: b.APIServer, ControllerManager: b.ControllerManager, Scheduler: b.Scheduler,
			Kubelet: b.Kubelet, KubeProxy: b.KubeProxy},
	}, nil
}

func unitName(u string) string {
	switch path.Ext(u) {
	case ".service", ".target", ".socket", ".timer":
		return u
	}
	return u + ".service"
}

// readHostFile reads a file on the host within ctx; a missing file reads
// as empty.
func readHostFile(ctx context.Context, h Host, p string) ([]byte, error) {
	return h.Exec(ctx, "f="+nodes.Quote(p)+`; [ -e "$f" ] || exit 0; exec cat -- "$f"`)
}

func readCounter(ctx context.Context, h Host, p string) (int, error) {
	b, err := readHostFile(ctx, h, p)
	if err != nil {
		return 0, err
	}
	if b = bytes.TrimSpace(b); len(b) == 0 {
		return 0, nil
	}
	return strconv.Atoi(string(b))
}

// Starts is how many times the unit's main process was started on the host
// (restarts and reboots included).
func Starts(ctx context.Context, h Host, unit string) (int, error) {
	return readCounter(ctx, h, InitStateDir+"/"+unitName(unit)+".starts")
}

// Boots is how many simulated reboots the host went through.
func Boots(ctx context.Context, h Host) (int, error) {
	return readCounter(ctx, h, InitStateDir+"/boots")
}

// UnitLog is the unit's output so far (its journal), or "" when it has none
// or it cannot be read.
func UnitLog(ctx context.Context, h Host, unit string) string {
	b, _ := readHostFile(ctx, h, InitStateDir+"/"+unitName(unit)+".log")
	return string(b)
}
