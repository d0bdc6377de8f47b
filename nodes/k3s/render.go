// Package k3s installs, configures and joins k3s on rack's nodes without
// `curl | sh`: rack renders the config and the service unit itself, uploads a
// checksum-verified binary, and restarts the service only when one of them changed.
//
// Where things are written on a node:
//
//	/usr/local/bin/k3s                       the binary (BinaryPath)
//	/etc/rancher/k3s/config.yaml             every setting, token included, 0600 (ConfigPath)
//	/etc/systemd/system/k3s[-agent].service  systemd unit (Unit)
//	/etc/systemd/system/k3s[-agent].service.env
//	/etc/init.d/k3s[-agent]                  OpenRC script, where OpenRC is the init system
//	/var/lib/rancher/k3s/agent/images/       airgap image tarballs
package k3s

import (
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/kube"
)

// Paths on the node.
const (
	BinaryPath     = "/usr/local/bin/k3s"
	ConfigPath     = "/etc/rancher/k3s/config.yaml"
	ImagesDir      = "/var/lib/rancher/k3s/agent/images"
	KubeconfigPath = "/etc/rancher/k3s/k3s.yaml"
	APIPort        = 6443
)

// Init systems rack can drive.
const (
	InitSystemd = "systemd"
	InitOpenRC  = "openrc"
)

// ServiceName is the service k3s runs as, the same names upstream's installer uses.
func ServiceName(n inventory.Node) string {
	if n.IsServer() {
		return "k3s"
	}
	return "k3s-agent"
}

// Role of the node: the k3s subcommand it runs.
func Role(n inventory.Node) string {
	if n.IsServer() {
		return "server"
	}
	return "agent"
}

// ServerURL is the URL nodes use to reach an API server.
func ServerURL(host string) string { return kube.ServerURL(host, APIPort) }

// embeddedEtcd reports whether the cluster's servers share k3s' embedded
// etcd: with more than one server (the first runs cluster-init); a single
// server keeps k3s' default SQLite.
func embeddedEtcd(inv *inventory.Inventory) bool { return len(inv.Servers()) > 1 }

// isFirstServer reports whether n is the inventory's first server: the one
// every other node joins and whose kubeconfig rack fetches.
func isFirstServer(inv *inventory.Inventory, n inventory.Node) bool {
	servers := inv.Servers()
	return n.IsServer() && len(servers) > 0 && servers[0].Name == n.Name
}

// JoinURL is the server a node joins: joining servers go to the first server
// (an existing etcd member), agents to the cluster's apiEndpoint.
func JoinURL(inv *inventory.Inventory, n inventory.Node) string {
	servers := inv.Servers()
	if len(servers) == 0 || isFirstServer(inv, n) {
		return ""
	}
	if n.IsServer() {
		return ServerURL(servers[0].Address)
	}
	return ServerURL(inv.Cluster.APIEndpoint)
}

// Config renders /etc/rancher/k3s/config.yaml for a node. It holds the token,
// so it is written 0600 and never printed. The output is deterministic: the same
// inventory gives the same bytes, which is how rack tells "unchanged".
func Config(inv *inventory.Inventory, n inventory.Node, token string) ([]byte, error) {
	m := &mapping{}
	m.add("token", token)
	if url := JoinURL(inv, n); url != "" {
		m.add("server", url)
	}
	if embeddedEtcd(inv) && isFirstServer(inv, n) {
		// Several servers: the first initialises embedded etcd, the others join it.
		m.add("cluster-init", true)
	}
	m.add("node-name", n.Name)
	if _, err := netip.ParseAddr(n.Address); err == nil {
		m.add("node-ip", n.Address)
	}
	// Labels a kubelet may set on its own Node go in at registration; the
	// others (node-role.kubernetes.io/worker …) would stop the kubelet from
	// starting, so rack sets them through the API once the node is Ready.
	var labels []string
	for _, k := range sortedKeys(n.Labels) {
		if kube.KubeletMaySet(k) {
			labels = append(labels, k+"="+n.Labels[k])
		}
	}
	if len(labels) > 0 {
		m.add("node-label", labels)
	}
	if len(n.Taints) > 0 {
		m.add("node-taint", n.Taints)
	}
	if n.IsServer() {
		if d := inv.Cluster.K3s.Disable; len(d) > 0 {
			m.add("disable", d)
		}
		if ep := inv.Cluster.APIEndpoint; ep != "" {
			m.add("tls-san", []string{ep})
		}
		m.add("write-kubeconfig-mode", "0600")
	}
	if err := addArgs(m, inv.Cluster.K3s.Args); err != nil {
		return nil, err
	}
	out, err := yaml.Marshal(m.node())
	if err != nil {
		return nil, err
	}
	header := "# Written by rack from the inventory; changes made here are overwritten by `rack up`.\n"
	return append([]byte(header), out...), nil
}

// registrationOnly are the config keys k3s reads only when a node first
// registers: a change to them alone needs no restart (rack applies it through
// the API), so the applied record leaves them out.
var registrationOnly = []string{"node-label", "node-taint"}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// addArgs turns cluster.k3s.args ("--flag=value", "--flag") into config keys;
// a flag given twice becomes a list, as k3s reads repeated flags.
func addArgs(m *mapping, args []string) error {
	for _, arg := range args {
		key, val, hasVal := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
		if key == "" || !strings.HasPrefix(arg, "--") {
			return fmt.Errorf("cluster.k3s.args: %q is not a k3s flag (write --flag=value)", arg)
		}
		if m.has(key) && !m.isList(key) && (key == "token" || key == "server" || key == "node-name") {
			return fmt.Errorf("cluster.k3s.args: %s is set by rack from the inventory; remove it from args", arg)
		}
		var v any = true
		if hasVal {
			v = val
		}
		m.appendValue(key, v)
	}
	return nil
}

// mapping is an ordered YAML mapping, so config files diff cleanly.
type mapping struct {
	keys []string
	vals map[string]any
}

func (m *mapping) add(k string, v any) {
	if m.vals == nil {
		m.vals = map[string]any{}
	}
	if _, ok := m.vals[k]; !ok {
		m.keys = append(m.keys, k)
	}
	m.vals[k] = v
}

func (m *mapping) has(k string) bool { _, ok := m.vals[k]; return ok }

func (m *mapping) isList(k string) bool { _, ok := m.vals[k].([]string); return ok }

func (m *mapping) appendValue(k string, v any) {
	prev, ok := m.vals[k]
	if !ok {
		m.add(k, v)
		return
	}
	s, isStr := v.(string)
	switch p := prev.(type) {
	case []string:
		if isStr {
			m.vals[k] = append(append([]string(nil), p...), s)
			return
		}
	case string:
		if isStr {
			m.vals[k] = []string{p, s}
			return
		}
	}
	m.vals[k] = v
}

func (m *mapping) node() *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode}
	for _, k := range m.keys {
		var v yaml.Node
		_ = v.Encode(m.vals[k])
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: k}, &v)
	}
	return n
}

// Unit is an init-system service definition and its environment file.
type Unit struct {
	Path    string // the unit file or OpenRC script
	Content []byte
	Mode    uint32
	EnvPath string
	Env     []byte
	// Enable and Restart are the commands that enable the service at boot and
	// (re)start it now.
	Enable  nodes.Cmd
	Restart nodes.Cmd
	Stop    nodes.Cmd
	// Logs prints the end of the service's log, for error messages.
	Logs nodes.Cmd
}

// ServiceUnit renders the service for a node under the given init system.
func ServiceUnit(n inventory.Node, init string) (Unit, error) {
	name := ServiceName(n)
	role := Role(n)
	switch init {
	case InitSystemd:
		return Unit{
			Path:    "/etc/systemd/system/" + name + ".service",
			Content: []byte(systemdUnit(name, role)),
			Mode:    0o644,
			EnvPath: "/etc/systemd/system/" + name + ".service.env",
			Env:     []byte(envFile()),
			Enable:  nodes.Sh(`systemctl daemon-reload && systemctl enable "$1"`, name),
			Restart: nodes.Sh(`systemctl restart "$1"`, name),
			Stop:    nodes.Sh(`systemctl stop "$1"`, name),
			Logs:    nodes.Sh(`journalctl -u "$1" -n 20 --no-pager 2>&1`, name),
		}, nil
	case InitOpenRC:
		return Unit{
			Path:    "/etc/init.d/" + name,
			Content: []byte(openrcScript(name, role)),
			Mode:    0o755,
			EnvPath: "/etc/rancher/k3s/" + name + ".env",
			Env:     []byte(envFile()),
			Enable:  nodes.Sh(`rc-update add "$1" default`, name),
			Restart: nodes.Sh(`rc-service "$1" restart`, name),
			Stop:    nodes.Sh(`rc-service "$1" stop`, name),
			Logs:    nodes.Sh(`tail -n 20 "/var/log/$1.log" 2>&1`, name),
		}, nil
	default:
		return Unit{}, fmt.Errorf("node %s: init system %q is neither systemd nor OpenRC; rack cannot run k3s as a service there", n.Name, init)
	}
}

func envFile() string {
	return "# Written by rack. Settings live in /etc/rancher/k3s/config.yaml (0600).\nK3S_CONFIG_FILE=" + ConfigPath + "\n"
}

func systemdUnit(name, role string) string {
	// The same service shape as upstream's installer: k3s manages its own
	// child processes (KillMode=process) and cgroups (Delegate=yes). No
	// modprobe lines: k3s loads br_netfilter and overlay itself when it starts.
	typ := "notify"
	if role == "agent" {
		typ = "exec"
	}
	return `# Written by rack; changes are overwritten by ` + "`rack up`" + `.
[Unit]
Description=Lightweight Kubernetes (` + role + `)
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=` + typ + `
EnvironmentFile=-/etc/systemd/system/` + name + `.service.env
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStart=` + BinaryPath + ` ` + role + `
`
}

func openrcScript(name, role string) string {
	return `#!/sbin/openrc-run
# Written by rack; changes are overwritten by ` + "`rack up`" + `.
depend() {
    after network-online
    want cgroups
}

supervisor=supervise-daemon
name=` + name + `
command="` + BinaryPath + `"
command_args="` + role + `"
output_log="/var/log/` + name + `.log"
error_log="/var/log/` + name + `.log"
pidfile="/var/run/` + name + `.pid"
respawn_delay=5
respawn_max=0

set -o allexport
if [ -f /etc/rancher/k3s/` + name + `.env ]; then . /etc/rancher/k3s/` + name + `.env; fi
set +o allexport
`
}

func fileMode(m uint32) os.FileMode { return os.FileMode(m) }
