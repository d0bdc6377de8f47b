package main

import (
	"sort"
	"time"

	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	kubeletapis "k8s.io/kubelet/pkg/apis"

	"github.com/homelab/rack/internal/jsonapi"
)

// containerdVersion is what k3s v1.33 reports as its runtime.
const containerdVersion = "containerd://2.1.4-k3s1"

type taint struct {
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	Effect string `json:"effect"`
}

type address struct {
	Type    string `json:"type"`
	Address string `json:"address"`
}

// nodeSpec is the Node as this k3s process wants it.
type nodeSpec struct {
	name   string
	labels map[string]string
	// defaults are the labels a kubelet keeps up to date on every start
	// (hostname, os, arch, instance type); the others it sets only when it
	// creates its Node.
	defaults map[string]string
	// roles are the node-role labels k3s' server side sets on servers.
	roles       map[string]string
	annotations map[string]string
	taints      []taint
	addresses   []address
	nodeInfo    map[string]string
	capacity    map[string]string
}

// describeNode computes the Node from the flags and the host, the way k3s
// and its kubelet do.
func describeNode(s *settings, role string) (*nodeSpec, error) {
	name := s.str("node-name")
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, err
		}
		name = h
	}
	name = strings.ToLower(name)
	arch, err := goArch()
	if err != nil {
		return nil, err
	}
	labels := map[string]string{
		"kubernetes.io/arch":               arch,
		"kubernetes.io/os":                 "linux",
		"kubernetes.io/hostname":           name,
		"beta.kubernetes.io/arch":          arch,
		"beta.kubernetes.io/os":            "linux",
		"node.kubernetes.io/instance-type": "k3s",
		"beta.kubernetes.io/instance-type": "k3s",
	}
	defaults := map[string]string{}
	for k, v := range labels {
		defaults[k] = v
	}
	roles := map[string]string{}
	if role == "server" {
		roles["node-role.kubernetes.io/control-plane"] = "true"
		roles["node-role.kubernetes.io/master"] = "true"
		// Embedded etcd (rather than SQLite) when initialising an HA
		// cluster or joining one.
		if s.bool("cluster-init") || s.str("server") != "" {
			roles["node-role.kubernetes.io/etcd"] = "true"
		}
	}
	for _, l := range s.list("node-label") {
		k, v, _ := strings.Cut(l, "=")
		labels[k] = v
	}
	taints, err := parseTaints(s.list("node-taint"))
	if err != nil {
		return nil, err
	}
	ips := s.list("node-ip")
	if len(ips) == 0 {
		ip, err := defaultIP()
		if err != nil {
			return nil, err
		}
		ips = []string{ip}
	}
	var addrs []address
	for _, ip := range ips {
		if net.ParseIP(ip) == nil {
			return nil, fatal("invalid node-ip %q", ip)
		}
		addrs = append(addrs, address{"InternalIP", ip})
	}
	external := s.list("node-external-ip")
	for _, ip := range external {
		addrs = append(addrs, address{"ExternalIP", ip})
	}
	addrs = append(addrs, address{"Hostname", name})

	nodeArgs, _ := json.Marshal(s.nodeArgs(role))
	annotations := map[string]string{
		"k3s.io/hostname":              name,
		"k3s.io/internal-ip":           strings.Join(ips, ","),
		"k3s.io/node-args":             string(nodeArgs),
		"node.alpha.kubernetes.io/ttl": "0",
		"volumes.kubernetes.io/controller-managed-attach-detach": "true",
	}
	if len(external) > 0 {
		annotations["k3s.io/external-ip"] = strings.Join(external, ",")
	}

	kernel, _ := exec.Command("uname", "-r").Output()
	bootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	// The test hosts share /etc/machine-id; derive one per node instead.
	machineID := sha256Hex([]byte("machine-id:" + name))[:32]
	info := map[string]string{
		"architecture":            arch,
		"operatingSystem":         "linux",
		"osImage":                 osImage(),
		"kernelVersion":           strings.TrimSpace(string(kernel)),
		"containerRuntimeVersion": containerdVersion,
		"kubeletVersion":          version,
		"kubeProxyVersion":        version,
		"bootID":                  strings.TrimSpace(string(bootID)),
		"machineID":               machineID,
		"systemUUID":              machineID[:8] + "-" + machineID[8:12] + "-" + machineID[12:16] + "-" + machineID[16:20] + "-" + machineID[20:32],
	}
	capacity := map[string]string{
		"cpu":    strconv.Itoa(runtime.NumCPU()),
		"memory": memTotal(),
		"pods":   "110",
	}
	return &nodeSpec{name: name, labels: labels, defaults: defaults, roles: roles, annotations: annotations, taints: taints,
		addresses: addrs, nodeInfo: info, capacity: capacity}, nil
}

func parseTaints(specs []string) ([]taint, error) {
	var out []taint
	for _, t := range specs {
		kv, effect, ok := strings.Cut(t, ":")
		switch effect {
		case "NoSchedule", "PreferNoSchedule", "NoExecute":
		default:
			ok = false
		}
		k, v, _ := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fatal("invalid node-taint %q: expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute", t)
		}
		out = append(out, taint{Key: k, Value: v, Effect: effect})
	}
	return out, nil
}

// goArch maps `uname -m` to GOARCH names. Running uname (rather than using
// runtime.GOARCH) lets a test host that poses as a Pi report arm64.
func goArch() (string, error) {
	out, err := exec.Command("uname", "-m").Output()
	if err != nil {
		return "", fmt.Errorf("uname -m: %w", err)
	}
	switch m := strings.TrimSpace(string(out)); m {
	case "x86_64", "amd64":
		return "amd64", nil
	case "aarch64", "arm64":
		return "arm64", nil
	case "armv7l", "armv6l", "arm":
		return "arm", nil
	case "riscv64", "s390x", "ppc64le":
		return m, nil
	default:
		return "", fatal("unsupported machine %q", m)
	}
}

// defaultIP is the first global IPv4 address, which is what k3s picks
// (from the default route's interface) on a single-homed machine.
func defaultIP() (string, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
				return ipn.IP.String(), nil
			}
		}
	}
	return "", fatal("no IPv4 address found for the node; set node-ip")
}

func osImage() string {
	if v, ok := lineValue("/etc/os-release", "PRETTY_NAME="); ok {
		return strings.Trim(v, `"'`)
	}
	return "Linux"
}

func memTotal() string {
	if v, ok := lineValue("/proc/meminfo", "MemTotal:"); ok {
		if f := strings.Fields(v); len(f) >= 1 {
			return f[0] + "Ki"
		}
	}
	return "1Gi"
}

// lineValue is what follows prefix on the first line of file that starts
// with it.
func lineValue(file, prefix string) (string, bool) {
	f, err := os.Open(file)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			return v, true
		}
	}
	return "", false
}

// registerNode does what a kubelet does when it starts: it creates its Node
// with its labels (--node-labels) and taints (--register-with-taints), or,
// when the Node exists, brings only its default labels up to date — a
// kubelet never applies changed node labels or taints to an existing Node,
// and neither does k3s. Then it reports its status.
func registerNode(ctx context.Context, api *jsonapi.Client, n *nodeSpec) error {
	path := "/api/v1/nodes/" + n.name
	for attempt := 0; ; attempt++ {
		var obj map[string]any
		err := api.Do(ctx, http.MethodGet, path, "", nil, &obj)
		switch {
		case jsonapi.StatusOf(err) == http.StatusNotFound:
			err = api.Do(ctx, http.MethodPost, "/api/v1/nodes", "", newNodeObject(n), nil)
		case err == nil:
			labels := subMap(subMap(obj, "metadata"), "labels")
			for k, v := range n.defaults {
				labels[k] = v
			}
			annotations := subMap(subMap(obj, "metadata"), "annotations")
			for k, v := range n.annotations {
				annotations[k] = v
			}
			err = api.Do(ctx, http.MethodPut, path, "", obj, nil)
		}
		if jsonapi.StatusOf(err) == http.StatusConflict && attempt < 10 {
			continue // someone (kwok, the node controller) updated it meanwhile
		}
		if err != nil {
			return err
		}
		break
	}
	return patchStatus(ctx, api, n)
}

// patchStatus reports what the kubelet knows about its node.
func patchStatus(ctx context.Context, api *jsonapi.Client, n *nodeSpec) error {
	status := map[string]any{"status": nodeStatus(n)}
	return api.Do(ctx, http.MethodPatch, "/api/v1/nodes/"+n.name+"/status", "application/merge-patch+json", status, nil)
}

// nodeStatus is the part of a Node's status the kubelet knows by itself.
func nodeStatus(n *nodeSpec) map[string]any {
	return map[string]any{
		"addresses":       n.addresses,
		"nodeInfo":        n.nodeInfo,
		"capacity":        n.capacity,
		"allocatable":     n.capacity,
		"daemonEndpoints": map[string]any{"kubeletEndpoint": map[string]any{"Port": 10250}},
	}
}

// reportStatus reports the node's status every 10 s until ctx ends, as a
// kubelet's status loop does; errors wait for the next round.
func reportStatus(ctx context.Context, api *jsonapi.Client, n *nodeSpec) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
		_ = patchStatus(ctx, api, n)
	}
}

// labelServer sets a server's node-role labels, which k3s' server side
// (not the kubelet, which may not) puts on every server.
func labelServer(ctx context.Context, admin *jsonapi.Client, n *nodeSpec) error {
	if len(n.roles) == 0 {
		return nil
	}
	patch := map[string]any{"metadata": map[string]any{"labels": n.roles}}
	return admin.Do(ctx, http.MethodPatch, "/api/v1/nodes/"+n.name, "application/merge-patch+json", patch, nil)
}

func newNodeObject(n *nodeSpec) map[string]any {
	spec := map[string]any{"providerID": "k3s://" + n.name}
	if len(n.taints) > 0 {
		spec["taints"] = n.taints
	}
	return map[string]any{
		"apiVersion": "v1",
		"kind":       "Node",
		"metadata": map[string]any{
			"name":        n.name,
			"labels":      n.labels,
			"annotations": n.annotations,
		},
		"spec": spec,
		// A kubelet creates its Node with its status filled in. Created
		// without it, kwok's node initialisation could read the bare Node
		// and write its own versions (kwok-…) over the status reported
		// right after (measured: two tests saw kwok-0.8.0 as the k3s version).
		"status": nodeStatus(n),
	}
}

// validateNodeLabels does what the kubelet does with --node-labels (k3s
// hands node-label over as that) before anything else: it refuses a
// malformed label and one in kubernetes.io or k8s.io outside the kubelet's
// allowed set (the API server's NodeRestriction would refuse it too).
func validateNodeLabels(s *settings) error {
	var unknown []string
	for _, l := range s.list("node-label") {
		k, _, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return fatal("invalid node-label %q: expected key=value", l)
		}
		if isKubernetesLabel(k) && !kubeletapis.IsKubeletLabel(k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fatal("kubelet exited: failed to validate kubelet flags: unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: %v\n--node-labels in the 'kubernetes.io' namespace must begin with an allowed prefix (%s) or be in the specifically allowed set (%s)",
			unknown, strings.Join(kubeletapis.KubeletLabelNamespaces(), ", "), strings.Join(kubeletapis.KubeletLabels(), ", "))
	}
	return nil
}

// isKubernetesLabel is the kubelet's test: a label in the kubernetes.io or
// k8s.io namespaces, or a subdomain of them.
func isKubernetesLabel(key string) bool {
	ns, _, ok := strings.Cut(key, "/")
	if !ok {
		return false
	}
	return ns == "kubernetes.io" || ns == "k8s.io" || strings.HasSuffix(ns, ".kubernetes.io") || strings.HasSuffix(ns, ".k8s.io")
}

func subMap(m map[string]any, key string) map[string]any {
	if v, ok := m[key].(map[string]any); ok {
		return v
	}
	v := map[string]any{}
	m[key] = v
	return v
}

// internalIP is the node's first InternalIP.
func (n *nodeSpec) internalIP() string {
	for _, a := range n.addresses {
		if a.Type == "InternalIP" {
			return a.Address
		}
	}
	return ""
}
