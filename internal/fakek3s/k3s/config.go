package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

const defaultConfigFile = "/etc/rancher/k3s/config.yaml"

// settings are the merged k3s flags of one run: k3s turns every config
// file key into the flag of the same name, so both end up here.
type settings struct {
	vals map[string][]string
	// order lists the keys in the order they were first set, for the
	// k3s.io/node-args annotation.
	order []string
}

// sliceFlags are k3s's StringSlice flags: they accumulate, and every value
// is split on commas ("disable: traefik,servicelb").
var sliceFlags = toSet(`tls-san kube-apiserver-arg etcd-arg kube-controller-manager-arg
kube-scheduler-arg kube-cloud-controller-manager-arg kubelet-arg kube-proxy-arg disable
node-label node-taint node-ip node-external-ip node-internal-dns node-external-dns
cluster-cidr service-cidr cluster-dns airgap-extra-registry`)

// boolFlags take no value on the command line.
var boolFlags = toSet(`debug alsologtostderr cluster-init cluster-reset flannel-ipv6-masq
flannel-external-ip etcd-expose-metrics etcd-disable-snapshots etcd-snapshot-compress etcd-s3
etcd-s3-skip-ssl-verify etcd-s3-insecure disable-scheduler disable-cloud-controller
disable-kube-proxy disable-network-policy disable-helm-controller disable-apiserver
disable-controller-manager disable-etcd embedded-registry supervisor-metrics with-node-id
docker disable-default-registry-endpoint protect-kernel-defaults secrets-encryption
enable-pprof rootless prefer-bundled-bin selinux disable-apiserver-lb tls-san-security
kine-tls nonroot-devices`)

// knownFlags are the other k3s server and agent flags; anything else in a
// config file is reported (and kept) rather than silently accepted.
var knownFlags = toSet(`config v vmodule log bind-address https-listen-port
supervisor-port apiserver-port apiserver-bind-address advertise-address advertise-port
data-dir service-node-port-range cluster-domain flannel-backend egress-selector-mode
servicelb-namespace write-kubeconfig write-kubeconfig-mode write-kubeconfig-group
helm-job-image token token-file agent-token agent-token-file server
cluster-reset-restore-path datastore-endpoint datastore-cafile datastore-certfile
datastore-keyfile etcd-snapshot-name etcd-snapshot-schedule-cron etcd-snapshot-retention
etcd-snapshot-dir etcd-s3-endpoint etcd-s3-endpoint-ca etcd-s3-access-key
etcd-s3-secret-key etcd-s3-session-token etcd-s3-bucket etcd-s3-region etcd-s3-folder
etcd-s3-proxy etcd-s3-config-secret etcd-s3-timeout default-local-storage-path node-name
image-credential-provider-bin-dir image-credential-provider-config
container-runtime-endpoint default-runtime image-service-endpoint snapshotter
private-registry system-default-registry resolv-conf flannel-iface flannel-conf
flannel-cni-conf vpn-auth vpn-auth-file secrets-encryption-provider lb-server-port
pause-image`)

// secretFlags never appear in logs or annotations.
var secretFlags = toSet(`token agent-token datastore-endpoint etcd-s3-access-key
etcd-s3-secret-key etcd-s3-session-token vpn-auth`)

func toSet(words string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(words) {
		m[w] = true
	}
	return m
}

func isKnown(key string) bool {
	return sliceFlags[key] || boolFlags[key] || knownFlags[key]
}

// shortFlags are k3s's one-letter aliases.
var shortFlags = map[string]string{"t": "token", "s": "server", "c": "config", "d": "data-dir", "o": "write-kubeconfig"}

// envFlags are the environment variables k3s reads for its flags.
var envFlags = map[string]string{
	"K3S_TOKEN":             "token",
	"K3S_TOKEN_FILE":        "token-file",
	"K3S_AGENT_TOKEN":       "agent-token",
	"K3S_AGENT_TOKEN_FILE":  "agent-token-file",
	"K3S_URL":               "server",
	"K3S_NODE_NAME":         "node-name",
	"K3S_CLUSTER_INIT":      "cluster-init",
	"K3S_KUBECONFIG_OUTPUT": "write-kubeconfig",
	"K3S_KUBECONFIG_MODE":   "write-kubeconfig-mode",
	"K3S_DATA_DIR":          "data-dir",
	"K3S_CONFIG_FILE":       "config",
}

func (s *settings) set(key string, values []string, appendSlice bool) {
	if _, ok := s.vals[key]; !ok {
		s.order = append(s.order, key)
	}
	if appendSlice {
		s.vals[key] = append(s.vals[key], values...)
	} else {
		s.vals[key] = values
	}
}

// str is the flag's value (the last one given), or "".
func (s *settings) str(key string) string {
	v := s.vals[key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// list is a slice flag's values, split on commas like urfave/cli does.
func (s *settings) list(key string) []string {
	var out []string
	for _, v := range s.vals[key] {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func (s *settings) bool(key string) bool {
	switch strings.ToLower(s.str(key)) {
	case "true", "1", "yes", "on":
		return true
	}
	return false
}

// nodeArgs renders the flags the way k3s records them in the node's
// k3s.io/node-args annotation, with secrets masked.
func (s *settings) nodeArgs(role string) []string {
	args := []string{role}
	keys := append([]string(nil), s.order...)
	sort.Strings(keys)
	for _, k := range keys {
		if k == "config" {
			continue
		}
		for _, v := range s.vals[k] {
			if secretFlags[k] {
				v = "********"
			}
			args = append(args, "--"+k, v)
		}
	}
	return args
}

// loadSettings merges, from weakest to strongest: environment variables,
// the config file and its drop-ins, and the command line. Slice flags from
// the command line add to the config file's, as in k3s, where config keys
// become flags placed before the command line's. warn receives unknown keys.
func loadSettings(args []string, warn func(string, ...any)) (*settings, error) {
	cli := &settings{vals: map[string][]string{}}
	if err := parseArgs(cli, args); err != nil {
		return nil, err
	}
	s := &settings{vals: map[string][]string{}}
	envNames := make([]string, 0, len(envFlags))
	for name := range envFlags {
		envNames = append(envNames, name)
	}
	sort.Strings(envNames)
	for _, name := range envNames {
		if v, ok := os.LookupEnv(name); ok && v != "" {
			s.set(envFlags[name], []string{v}, false)
		}
	}
	path, explicit := defaultConfigFile, false
	if p := s.str("config"); p != "" {
		path, explicit = p, true
	}
	if p := cli.str("config"); p != "" {
		path, explicit = p, true
	}
	files := []string{path}
	dropins, _ := filepath.Glob(path + ".d/*.yaml")
	sort.Strings(dropins)
	files = append(files, dropins...)
	for i, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) && (i > 0 || !explicit) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := parseConfig(s, f, b, warn); err != nil {
			return nil, err
		}
	}
	for _, k := range cli.order {
		s.set(k, cli.vals[k], sliceFlags[k])
	}
	return s, nil
}

// parseConfig reads one config file. Values are taken as written (the YAML
// text, not its resolved type), so write-kubeconfig-mode: 0644 stays octal.
func parseConfig(s *settings, path string, data []byte, warn func(string, ...any)) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return fmt.Errorf("%s: expected a mapping of flag names to values", path)
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		key, val := m.Content[i].Value, m.Content[i+1]
		appendSlice := strings.HasSuffix(key, "+")
		key = strings.TrimSuffix(key, "+")
		var values []string
		switch val.Kind {
		case yaml.ScalarNode:
			values = []string{val.Value}
		case yaml.SequenceNode:
			for _, item := range val.Content {
				if item.Kind != yaml.ScalarNode {
					return fmt.Errorf("%s:%d: %s: list items must be plain values", path, item.Line, key)
				}
				values = append(values, item.Value)
			}
		default:
			return fmt.Errorf("%s:%d: %s: expected a value or a list", path, val.Line, key)
		}
		if !isKnown(key) {
			shown := strings.Join(values, ",")
			if strings.Contains(key, "token") || strings.Contains(key, "secret") || strings.Contains(key, "password") {
				shown = "********"
			}
			warn("Unknown flag --%s found in %s (value %q): kept, but the fake k3s does nothing with it", key, path, shown)
		}
		s.set(key, values, appendSlice)
	}
	return nil
}

// parseArgs reads the command-line flags after the subcommand.
func parseArgs(s *settings, args []string) error {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			return fmt.Errorf("unexpected argument %q", a)
		}
		name := strings.TrimLeft(a, "-")
		value, hasValue := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = k, v, true
		}
		if long, ok := shortFlags[name]; ok && len(name) == 1 {
			name = long
		}
		if !hasValue {
			if boolFlags[name] {
				value = "true"
			} else if i+1 < len(args) {
				i++
				value = args[i]
			} else {
				return fmt.Errorf("flag needs an argument: --%s", name)
			}
		}
		s.set(name, []string{value}, sliceFlags[name])
	}
	return nil
}
