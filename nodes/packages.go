package nodes

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Package is one package under the name each package manager knows it by.
type Package struct {
	Apt, Dnf, Apk, Zypper string
	// Command is on PATH once the package is installed: how rack tells
	// whether a node needs it, without asking the package manager.
	Command string
	// Service is enabled and started after the install, if set.
	Service string
}

// The packages Longhorn needs on every node that offers it storage.
var (
	OpenISCSI = Package{Apt: "open-iscsi", Dnf: "iscsi-initiator-utils", Apk: "open-iscsi", Zypper: "open-iscsi", Command: "iscsiadm", Service: "iscsid"}
	NFSClient = Package{Apt: "nfs-common", Dnf: "nfs-utils", Apk: "nfs-utils", Zypper: "nfs-client", Command: "mount.nfs"}
)

// DefaultLockWait bounds the wait for another package manager (on a freshly
// flashed Pi, unattended-upgrades holds the dpkg lock for many minutes).
const DefaultLockWait = 10 * time.Minute

// installScript installs packages with whichever package manager the node
// has. Its arguments: the lock wait in seconds, then four names per package
// (apt, dnf, apk, zypper), then the services to enable.
//
// apt: the package lists of a machine that was never updated, or not for a
// long time, lack packages or point at removed versions; they are refreshed
// first when older than a day, and once more when an install still fails.
// apt's DPkg::Lock::Timeout waits for a dpkg lock held by someone else and
// says so on stderr ("Waiting for cache lock … held by process N
// (unattended-upgr)"), which rack shows as the node's output.
const installScript = `set -e
wait=$1; shift
apt= dnf= apk= zyp=
while [ "$1" != -- ]; do apt="$apt $1"; dnf="$dnf $2"; apk="$apk $3"; zyp="$zyp $4"; shift 4; done
shift
if command -v apt-get >/dev/null 2>&1; then
	export DEBIAN_FRONTEND=noninteractive
	lock="-o DPkg::Lock::Timeout=$wait"
	if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]; then
		echo "refreshing the package lists (apt-get update): they are missing or older than a day"
		apt-get $lock update -q
	fi
	if ! apt-get $lock install -y -q $apt; then
		echo "the install failed; refreshing the package lists once and trying again"
		apt-get $lock update -q
		apt-get $lock install -y -q $apt
	fi
elif command -v dnf >/dev/null 2>&1; then dnf install -y $dnf
elif command -v apk >/dev/null 2>&1; then apk add $apk
elif command -v zypper >/dev/null 2>&1; then zypper --non-interactive install $zyp
else echo "no known package manager (apt-get, dnf, apk, zypper): install$apt by hand" >&2; exit 1; fi
for s in "$@"; do
	if [ -d /run/systemd/system ]; then systemctl enable --now "$s"
	elif command -v rc-update >/dev/null 2>&1; then rc-update add "$s" default && rc-service "$s" start
	fi
done`

// InstallCmd is the command that installs pkgs, waiting at most lockWait for
// another package manager to finish.
func InstallCmd(pkgs []Package, lockWait time.Duration) Cmd {
	if lockWait <= 0 {
		lockWait = DefaultLockWait
	}
	args := []string{strconv.Itoa(int(lockWait.Seconds()))}
	var services []string
	for _, p := range pkgs {
		args = append(args, p.Apt, p.Dnf, p.Apk, p.Zypper)
		if p.Service != "" {
			services = append(services, p.Service)
		}
	}
	args = append(args, "--")
	return Sh(installScript, append(args, services...)...)
}

// Install installs pkgs as root; see InstallCmd.
func (h *Host) Install(ctx context.Context, pkgs []Package, lockWait time.Duration) error {
	if len(pkgs) == 0 {
		return nil
	}
	if err := h.Run(ctx, InstallCmd(pkgs, lockWait), RunOptions{Privileged: true}); err != nil {
		return fmt.Errorf("install %s: %w", PackageNames(pkgs), err)
	}
	return nil
}

// PackageNames lists the packages by their apt names, for messages.
func PackageNames(pkgs []Package) string {
	names := make([]string, len(pkgs))
	for i, p := range pkgs {
		names[i] = p.Apt
	}
	return strings.Join(names, ", ")
}
