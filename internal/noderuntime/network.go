package noderuntime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/homelab/rack/internal/jsonapi"
)

// routeProto tags the routes this package adds (pod CIDRs of other nodes,
// the service CIDR), so they can be told from anyone else's.
const routeProto = "77"

// masqChain and fwdChain are this package's iptables chains; like flannel's
// they masquerade traffic from pods to outside the cluster CIDR (the root
// namespace cannot route replies to pod addresses: it blackholes the pod
// CIDR) and accept forwarded pod traffic.
const (
	masqChain = "RACK-POSTROUTING"
	fwdChain  = "RACK-FORWARD"
)

func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// setupNetwork prepares the host's network namespace for pods: forwarding,
// bridged traffic through iptables (kube-proxy's DNAT must see pod-to-pod
// traffic on cni0), a real route for the service CIDR, masquerading.
func (c *Config) setupNetwork(ctx context.Context) error {
	for path, val := range map[string]string{
		"/proc/sys/net/ipv4/ip_forward":                         "1",
		"/proc/sys/net/bridge/bridge-nf-call-iptables":          "1",
		"/proc/sys/net/bridge/bridge-nf-call-ip6tables":         "1",
		"/proc/sys/net/ipv4/conf/all/route_localnet":            "1",
		"/proc/sys/net/ipv4/conf/default/rp_filter":             "0",
		"/proc/sys/net/ipv4/conf/all/rp_filter":                 "0",
		"/proc/sys/net/ipv4/conf/" + c.Interface + "/rp_filter": "0",
	} {
		if err := os.WriteFile(path, []byte(val), 0o644); err != nil && !(os.IsNotExist(err) && strings.Contains(path, "bridge-nf-call-ip6")) {
			return fmt.Errorf("sysctl %s=%s: %w", path, val, err)
		}
	}
	if _, err := run(ctx, "ip", "route", "replace", c.ServiceCIDR, "via", c.ServiceGateway, "dev", c.Interface, "proto", routeProto); err != nil {
		return err
	}
	rules := [][]string{
		{"-t", "nat", "-N", masqChain},
		{"-t", "nat", "-A", masqChain, "-s", c.ClusterCIDR, "-d", c.ClusterCIDR, "-j", "RETURN"},
		{"-t", "nat", "-A", masqChain, "-s", c.ClusterCIDR, "!", "-d", "224.0.0.0/4", "-j", "MASQUERADE", "--random-fully"},
		{"-t", "nat", "-I", "POSTROUTING", "-j", masqChain},
		{"-t", "filter", "-N", fwdChain},
		{"-t", "filter", "-A", fwdChain, "-s", c.ClusterCIDR, "-j", "ACCEPT"},
		{"-t", "filter", "-A", fwdChain, "-d", c.ClusterCIDR, "-j", "ACCEPT"},
		{"-t", "filter", "-A", "FORWARD", "-j", fwdChain},
	}
	// From scratch each time: a restarted node must not stack rules.
	if err := cleanIptables(ctx, "RACK-"); err != nil {
		return err
	}
	for _, r := range rules {
		if _, err := run(ctx, "iptables", append([]string{"-w"}, r...)...); err != nil {
			return err
		}
	}
	return nil
}

// cleanIptables removes every chain whose name starts with one of the
// prefixes, and every rule that mentions one, from iptables and ip6tables,
// as k3s-killall.sh does (iptables-save | grep -v KUBE- | iptables-restore).
func cleanIptables(ctx context.Context, prefixes ...string) error {
	var errs []error
	for _, fam := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(fam + "-save"); err != nil {
			continue
		}
		saved, err := run(ctx, fam+"-save")
		if err != nil {
			if fam == "ip6tables" {
				continue // no IPv6 netfilter here
			}
			errs = append(errs, err)
			continue
		}
		var kept []string
		changed := false
		for _, line := range strings.Split(saved, "\n") {
			drop := false
			for _, p := range prefixes {
				if strings.Contains(line, p) {
					drop = true
				}
			}
			if drop {
				changed = true
				continue
			}
			kept = append(kept, line)
		}
		if !changed {
			continue
		}
		cmd := exec.CommandContext(ctx, fam+"-restore", "-w")
		cmd.Stdin = strings.NewReader(strings.Join(kept, "\n"))
		if out, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s-restore: %v: %s", fam, err, strings.TrimSpace(string(out))))
		}
	}
	return errors.Join(errs...)
}

// PodRoutes keeps, in the calling process's network namespace, a route to
// every Node's pod CIDR via that Node's InternalIP on Dev: what flannel's
// host-gw backend does (flannel itself cannot be built here: its
// tencentvpc backend, linked unconditionally, needs a module version the
// proxy refuses). Nodes use it for each other; a namespace holding an API
// server started with --enable-aggregator-routing needs it too, to reach
// webhook pods. It owns every route tagged with its protocol number in the
// namespace, so one namespace must not hold two clusters' routes (the
// root namespace of a machine running several test clusters, for one).
type PodRoutes struct {
	// Client reads Nodes: any identity allowed to list them
	// (system:kube-proxy, an admin).
	Client Admin
	// Dev is the interface towards the nodes (eth0 on a node, rackbr0 in
	// the test rack's root namespace).
	Dev string
	// Self is a Node whose pod CIDR is local (a node's own), or "".
	Self string
	// Logf receives sync errors (each once until it changes); nil discards.
	Logf func(string, ...any)
}

// Run syncs every 2 s until ctx ends, then returns without removing the
// routes (Flush does).
func (p PodRoutes) Run(ctx context.Context) error {
	api, err := p.Client.client()
	if err != nil {
		return err
	}
	if p.Logf == nil {
		p.Logf = func(string, ...any) {}
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	var lastErr string
	for {
		if err := p.syncOnce(ctx, api); err != nil && ctx.Err() == nil && err.Error() != lastErr {
			p.Logf("pod routes: %v", err)
			lastErr = err.Error()
		} else if err == nil {
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Flush removes the routes PodRoutes added in this namespace.
func (p PodRoutes) Flush(ctx context.Context) error {
	_, err := run(ctx, "ip", "-4", "route", "flush", "proto", routeProto)
	return err
}

func (p PodRoutes) syncOnce(ctx context.Context, api *jsonapi.Client) error {
	nodes, err := listNodes(ctx, api)
	if err != nil {
		return err
	}
	want := map[string]string{}
	for _, n := range nodes {
		ip := n.internalIP()
		if n.Metadata.Name == p.Self || n.Spec.PodCIDR == "" || ip == "" {
			continue
		}
		if _, _, err := net.ParseCIDR(n.Spec.PodCIDR); err != nil || net.ParseIP(ip) == nil {
			continue
		}
		want[n.Spec.PodCIDR] = ip
	}
	out, err := run(ctx, "ip", "-4", "route", "show", "proto", routeProto)
	if err != nil {
		return err
	}
	have := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		// Only pod CIDR routes: a node's service CIDR route has the same tag.
		if len(f) >= 3 && f[1] == "via" {
			if _, ok := want[f[0]]; ok || isPodRoute(f[0]) {
				have[f[0]] = f[2]
			}
		}
	}
	var errs []error
	for cidr, via := range want {
		if have[cidr] == via {
			continue
		}
		if _, err := run(ctx, "ip", "route", "replace", cidr, "via", via, "dev", p.Dev, "proto", routeProto); err != nil {
			errs = append(errs, err)
		}
	}
	for cidr := range have {
		if _, ok := want[cidr]; !ok {
			if _, err := run(ctx, "ip", "route", "del", cidr, "proto", routeProto); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// isPodRoute reports whether cidr lies in a pod network: a /24 (or
// smaller) that is not the service CIDR route. Routes of Nodes that are
// gone must still be removed, so the Node list alone cannot tell.
func isPodRoute(cidr string) bool {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		return false
	}
	ones, _ := n.Mask.Size()
	return ones >= 24
}

// cleanNetwork removes what setupNetwork, the route sync, the CNI plugins
// and kube-proxy added to the host's network namespace. The service route
// goes back to blackhole: the test rack's rule for every namespace.
func (c *Config) cleanNetwork(ctx context.Context) error {
	var errs []error
	if err := cleanIptables(ctx, "KUBE-", "CNI-", "RACK-"); err != nil {
		errs = append(errs, err)
	}
	if _, err := run(ctx, "ip", "-4", "route", "flush", "proto", routeProto); err != nil {
		errs = append(errs, err)
	}
	if _, err := run(ctx, "ip", "route", "replace", "blackhole", c.ServiceCIDR); err != nil {
		errs = append(errs, err)
	}
	if _, err := net.InterfaceByName("cni0"); err == nil {
		if _, err := run(ctx, "ip", "link", "del", "cni0"); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range []string{c.path("cni-ipam"), c.cniConfDir()} {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
