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
// the host's private /usr/local/bin and /etc/systemd/system; anything else
// fails as an unknown package does.
const aptGet = `#!/bin/sh
set -e
[ "$1" = install ] || { echo "E: test-host apt-get only installs" >&2; exit 100; }
shift
for p in "$@"; do
	case "$p" in
	-*) ;;
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

// InstallAptGet puts the apt-get stand-in on a test host.
func InstallAptGet(ctx context.Context, h Host) error {
	if err := h.WriteFile(AptGetPath, []byte(aptGet), 0o755); err != nil {
		return fmt.Errorf("install apt-get stand-in: %w", err)
	}
	return nil
}
