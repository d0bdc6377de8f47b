package noderuntime

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// debPackages are Debian's packages a node needs, by a file each installs.
var debPackages = []struct{ path, pkg string }{
	{"/usr/bin/containerd", "containerd"},
	{"/usr/bin/ctr", "containerd"},
	{"/usr/sbin/runc", "runc"},
	{"/usr/lib/cni/bridge", "containernetworking-plugins"},
	{"/usr/sbin/iptables", "iptables"},
	{"/usr/sbin/conntrack", "conntrack"},
}

// MissingPackages lists the Debian packages a node needs that are not
// installed.
func MissingPackages() []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range debPackages {
		if _, err := os.Stat(p.path); err != nil && !seen[p.pkg] {
			seen[p.pkg] = true
			out = append(out, p.pkg)
		}
	}
	return out
}

// EnsurePackages installs the missing ones with apt-get (root only), the
// way scripts/build-controlplane.sh installs etcd.
func EnsurePackages(ctx context.Context) error {
	missing := MissingPackages()
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("missing %s: apt-get install them (needs root)", strings.Join(missing, " "))
	}
	install := func() ([]byte, error) {
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	if _, err := install(); err == nil {
		return nil
	}
	if out, err := exec.CommandContext(ctx, "apt-get", "update", "-qq").CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get update: %v: %s", err, out)
	}
	if out, err := install(); err != nil {
		return fmt.Errorf("apt-get install %s: %v: %s", strings.Join(missing, " "), err, out)
	}
	return nil
}
