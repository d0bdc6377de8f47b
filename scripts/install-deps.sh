#!/usr/bin/env bash
# Installs the Debian packages the test rack needs, only when missing: OpenSSH
# for the test hosts, containerd, runc, the CNI plugins,
# iptables and conntrack for the hosts that run real pods, curl to reach them.
set -euo pipefail
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v sudo >/dev/null 2>&1 || need+=(sudo)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
[ -x /usr/bin/containerd ] || need+=(containerd)
[ -x /usr/sbin/runc ] || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
command -v flock >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -eq 0 ]; then
	echo "== system packages: all present"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "== system packages missing (${need[*]}); not root, so the test-rack tests will skip"
	exit 0
fi
echo "== installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
