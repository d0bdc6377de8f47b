package fakek3s

import (
	"context"
	"fmt"
)

// AptGetPath is where InstallAptGet puts the package-manager stand-in.
const AptGetPath = "/usr/local/bin/apt-get"

// aptGet stands in for apt-get on a test host. Test hosts share the machine's
// root file system and have no network, so a real install would change the
// machine for every host (open-iscsi even pulls in systemd). It knows the
// packages rack installs and puts their commands, and the iscsid unit, into
// the host's private /usr/local/bin and /etc/systemd/system.
//
// It is as strict as apt where rack depends on apt's behaviour:
//   - like a freshly flashed Raspberry Pi OS image, the host starts with no
//     package lists: install fails with "Unable to locate package" until
//     `apt-get update` has run;
//   - the dpkg lock (which unattended-upgrades holds on a fresh Pi) is
//     honoured: without -o DPkg::Lock::Timeout=N install fails at once, as
//     apt does; with it, apt-get waits up to N seconds, saying so on stderr.
//     HoldDpkgLock takes the lock the way unattended-upgrades would.
//
// Its state lives in AptStateDir, private to the host.
const aptGet = `#!/bin/sh
set -e
state=` + AptStateDir + `
mkdir -p "$state"
lockwait=
while [ $# -gt 0 ]; do
	case "$1" in
	-o) shift; case "$1" in DPkg::Lock::Timeout=*) lockwait=${1#*=} ;; esac ;;
	-o*) case "${1#-o}" in DPkg::Lock::Timeout=*) lockwait=${1#*=} ;; esac ;;
	-q|-qq|-y|--yes|--no-install-recommends) ;;
	update|install) break ;;
	*) echo "E: test-host apt-get: unsupported option $1" >&2; exit 100 ;;
	esac
	shift
done
verb=$1; shift
exec 9>"$state/lock-frontend"
if ! flock -n 9; then
	holder=$(cat "$state/lock-holder" 2>/dev/null || echo "unknown")
	[ -n "$lockwait" ] || { echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process $holder" >&2; exit 100; }
	waited=0
	until flock -n 9; do
		[ "$waited" -lt "$lockwait" ] || { echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process $holder" >&2; exit 100; }
		echo "Waiting for cache lock: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process $holder... ${waited}s" >&2
		sleep 1; waited=$((waited+1))
	done
fi
case "$verb" in
update)
	touch "$state/lists"
	echo "Reading package lists... Done (test host)"
	exit 0 ;;
install) ;;
*) echo "E: test-host apt-get only updates and installs" >&2; exit 100 ;;
esac
for p in "$@"; do
	case "$p" in
	-*) continue ;;
	esac
	[ -e "$state/lists" ] || { echo "E: Unable to locate package $p" >&2; exit 100; }
	case "$p" in
	open-iscsi)
		printf '#!/bin/sh\necho "iscsiadm (test host)"\n' > /usr/local/bin/iscsiadm
		printf '[Unit]\nDescription=iSCSI initiator daemon (test host)\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n' > /etc/systemd/system/iscsid.service
		chmod 0755 /usr/local/bin/iscsiadm
		echo "Setting up open-iscsi (test host) ..." ;;
	nfs-common)
		printf '#!/bin/sh\nexit 0\n' > /usr/local/bin/mount.nfs
		chmod 0755 /usr/local/bin/mount.nfs
		echo "Setting up nfs-common (test host) ..." ;;
	*) echo "E: Unable to locate package $p" >&2; exit 100 ;;
	esac
done
`

// AptStateDir holds the apt stand-in's package lists marker and dpkg lock.
const AptStateDir = "/etc/rancher/.fake/apt"

// HoldDpkgLockCmd is a shell command that takes the stand-in's dpkg lock in
// the background, as unattended-upgrades does on a freshly flashed Pi,
// recording its pid as the holder. The lock is held until
// ReleaseDpkgLockCmd runs or maxSecs pass: a test releases it once it has
// seen rack wait, so a slow machine cannot let the lock lapse before rack
// gets there.
func HoldDpkgLockCmd(maxSecs int) string {
	return fmt.Sprintf(`mkdir -p %[1]s && rm -f %[1]s/release-lock && (echo "$$ (unattended-upgr)" > %[1]s/lock-holder; exec flock %[1]s/lock-frontend sh -c 'i=0; while [ ! -e %[1]s/release-lock ] && [ $i -lt %[2]d ]; do sleep 0.2; i=$((i+1)); done') >/dev/null 2>&1 &
for i in 1 2 3 4 5 6 7 8 9 10; do flock -n %[1]s/lock-frontend true 2>/dev/null || exit 0; sleep 0.1; done; echo "lock not taken" >&2; exit 1`, AptStateDir, maxSecs*5)
}

// ReleaseDpkgLockCmd ends the hold HoldDpkgLockCmd took.
func ReleaseDpkgLockCmd() string {
	return fmt.Sprintf("touch %s/release-lock", AptStateDir)
}

// InstallAptGet puts the apt-get stand-in on a test host.
func InstallAptGet(ctx context.Context, h Host) error {
	if err := h.WriteFile(AptGetPath, []byte(aptGet), 0o755); err != nil {
		return fmt.Errorf("install apt-get stand-in: %w", err)
	}
	return nil
}
