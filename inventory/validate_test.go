package inventory

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// base is a small valid inventory; cases replace one of its sections.
const base = `cluster:
  name: lab
  k3s:
    version: v1.33.5+k3s1
ssh:
  user: pi
nodes:
%s
addons:
%s
apps:
%s
`

const (
	baseNodes = `  - {name: s1, address: 10.0.0.1, role: server}
  - {name: a1, address: 10.0.0.2, role: agent, storage: {longhorn: /var/lib/longhorn}}`
	baseAddons = `  metallb: {pools: [{name: lan, addresses: [10.0.0.200-10.0.0.250]}]}
  traefik: {}`
	baseApps = `  - {name: web, image: web:1, port: 80, strategy: {type: blue-green}}`
)

func doc(nodes, addons, apps string) string {
	if nodes == "" {
		nodes = baseNodes
	}
	if addons == "" {
		addons = baseAddons
	}
	if apps == "" {
		apps = baseApps
	}
	return fmt.Sprintf(base, nodes, addons, apps)
}

func parse(t *testing.T, text string, env map[string]string) (*Inventory, Problems) {
	t.Helper()
	return Parse("rack.yaml", []byte(text), Options{LookupEnv: func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}})
}

// want is one expected problem: its path, its line, and words its message must hold.
type want struct {
	path string
	line int
	msg  string
	sev  Severity
}

func TestValidationRules(t *testing.T) {
	cases := []struct {
		name string
		text string
		want []want
	}{
		{"valid", doc("", "", ""), nil},
		{"yaml syntax", "cluster:\n  name: lab\n   bad: x\n", []want{{"", 3, "not valid YAML: mapping values are not allowed", SeverityError}}},
		// The YAML library reports a broken {…} or […] one line above where it
		// starts; rack reports the line to fix.
		{"flow mapping not closed", "cluster:\n  name: lab\nnodes:\n  - {name: a, address: 10.0.0.1, role: server\n  - {name: b}\n", []want{{"", 4, "did not find expected ',' or '}' (this {…} or […] is not closed", SeverityError}}},
		{"flow mapping on the first line", "{cluster: {name: lab}\nnodes: []\n", []want{{"", 1, "did not find expected ',' or '}'", SeverityError}}},
		{"flow sequence over lines", "cluster: {name: lab}\nnodes: []\napps: [a,\n  b,\n  c\nx: 1\n", []want{{"", 3, "did not find expected ',' or ']'", SeverityError}}},
		{"nested flow", "cluster: {name: lab}\n\n\nnodes: [{name: a, labels: {x: [1, 2}}]\n", []want{{"", 4, "did not find expected ',' or ']'", SeverityError}}},
		{"double comma", "cluster: {name: lab}\nnodes: []\n\napps: [a,, b]\n", []want{{"", 4, "did not find expected node content", SeverityError}}},
		{"control character in a path", "cluster: {name: lab, k3s: {version: v1.33.5+k3s1}}\nnodes:\n  - name: a\n    address: 10.0.0.1\n    role: server\n    storage: {local: [{name: v, path: \"/srv/a\\nreboot\", capacity: 1Gi}]}\naddons: {localPV: {}}\n",
			[]want{{"nodes[0].storage.local[0].path", 6, "holds the control character U+000A", SeverityError}}},
		{"escape in a label", "cluster: {name: lab, k3s: {version: v1.33.5+k3s1}}\nnodes:\n  - name: a\n    address: 10.0.0.1\n    role: server\n    labels: {\"x\\e\": y}\n",
			[]want{{"nodes[0].labels", 6, "a key holds the control character U+001B", SeverityError}}},
		{"windows line endings", strings.ReplaceAll(doc(`  - {name: s1, adress: 10.0.0.1, role: server}`, "", ""), "\n", "\r\n"),
			[]want{{"nodes[0].adress", 8, `did you mean address?`, SeverityError}, {"nodes[0].address", 8, "is required", SeverityError}}},
		{"yaml tab", "cluster:\n\tname: lab\n", []want{{"", 2, "indented with a tab", SeverityError}}},
		{"empty file", "", []want{{"", 1, "empty", SeverityError}}},
		{"unknown node key with hint", doc(`  - {name: s1, adress: 10.0.0.1, role: server}`, "", ""),
			[]want{{"nodes[0].adress", 8, `did you mean address?`, SeverityError}, {"nodes[0].address", 8, "is required", SeverityError}}},
		{"unknown top-level key", doc("", "", "") + "addon: {}\n", []want{{"addon", 15, "did you mean addons?", SeverityError}}},
		{"unknown key without close match", doc("", "", "") + "zzzzzzzz: 1\n", []want{{"zzzzzzzz", 15, `unknown key "zzzzzzzz"`, SeverityError}}},
		{"duplicate key", strings.Replace(doc("", "", ""), "name: lab", "name: lab\n  name: lab2", 1), []want{{"cluster.name", 3, "given twice (first on line 2)", SeverityError}}},
		{"duplicate node name", doc(`  - {name: s1, address: 10.0.0.1, role: server}
  - {name: s1, address: 10.0.0.2, role: agent}`, "", ""),
			[]want{{"nodes[1].name", 9, `duplicate node name "s1" (also nodes[0])`, SeverityError}}},
		{"duplicate address", doc(`  - {name: s1, address: 10.0.0.1, role: server}
  - {name: a1, address: 10.0.0.1, role: agent}`, "", ""),
			[]want{{"nodes[1].address", 9, "duplicate address 10.0.0.1 (also nodes[0])", SeverityError}}},
		{"no server", doc(`  - {name: a1, address: 10.0.0.2, role: agent, storage: {longhorn: /x}}`, "", ""),
			[]want{{"nodes", 7, "no server", SeverityError}}},
		{"even servers warn", doc(`  - {name: s1, address: 10.0.0.1, role: server}
  - {name: s2, address: 10.0.0.3, role: server, storage: {longhorn: /x}}`, "", ""),
			[]want{{"nodes", 7, "2 servers with embedded etcd", SeverityWarning}}},
		{"unknown role", doc(`  - {name: s1, address: 10.0.0.1, role: sever}`, "", ""),
			[]want{{"nodes[0].role", 8, `unknown role "sever": use server or agent (did you mean server?)`, SeverityError}}},
		{"unknown arch", doc(`  - {name: s1, address: 10.0.0.1, role: server, arch: amd46}`, "", ""),
			[]want{{"nodes[0].arch", 8, "did you mean amd64?", SeverityError}}},
		{"unknown strategy", doc("", "", `  - {name: web, image: web:1, port: 80, strategy: {type: canery}}`),
			[]want{{"apps[0].strategy.type", 14, "did you mean canary?", SeverityError}}},
		{"malformed range", doc("", `  metallb:
    pools: [{name: lan, addresses: [10.0.0.300-10.0.0.310]}]`, ""),
			[]want{{"addons.metallb.pools[0].addresses[0]", 12, "not a range of two IP addresses", SeverityError}}},
		{"reversed range", doc("", `  metallb:
    pools: [{name: lan, addresses: [10.0.0.250-10.0.0.200]}]`, ""),
			[]want{{"addons.metallb.pools[0].addresses[0]", 12, "ends before it starts", SeverityError}}},
		{"malformed cidr", doc("", `  metallb:
    pools: [{name: lan, addresses: [10.0.0.0/33]}]`, ""),
			[]want{{"addons.metallb.pools[0].addresses[0]", 12, "not a CIDR", SeverityError}}},
		{"cidr host bits", doc("", `  metallb:
    pools: [{name: lan, addresses: [10.0.0.201/29]}]`, ""),
			[]want{{"addons.metallb.pools[0].addresses[0]", 12, "did you mean 10.0.0.200/29?", SeverityError}}},
		{"neither range nor cidr", doc("", `  metallb:
    pools: [{name: lan, addresses: [10.0.0.200]}]`, ""),
			[]want{{"addons.metallb.pools[0].addresses[0]", 12, "neither a range", SeverityError}}},
		{"overlap range and cidr in one pool", doc("", `  metallb:
    pools:
      - name: lan
        addresses:
          - 10.0.0.200-10.0.0.210
          - 10.0.0.208/29`, ""),
			[]want{{"addons.metallb.pools[0].addresses[1]", 16, "overlaps 10.0.0.200-10.0.0.210 (addons.metallb.pools[0].addresses[0])", SeverityError}}},
		{"overlap across pools", doc("", `  metallb:
    pools:
      - {name: a, addresses: [10.0.0.200-10.0.0.220]}
      - {name: b, addresses: [10.0.0.220-10.0.0.230]}`, ""),
			[]want{{"addons.metallb.pools[1].addresses[0]", 14, "overlaps", SeverityError}}},
		{"range contains node", doc("", `  metallb:
    pools: [{name: lan, addresses: [10.0.0.0/30]}]`, ""),
			[]want{
				{"addons.metallb.pools[0].addresses[0]", 12, "contains the address of node s1 (10.0.0.1, nodes[0])", SeverityError},
				{"addons.metallb.pools[0].addresses[0]", 12, "contains the address of node a1 (10.0.0.2, nodes[1])", SeverityError}}},
		{"bgp without peers", doc("", `  metallb:
    pools: [{name: lan, addresses: [10.0.0.200/29], mode: bgp}]`, ""),
			[]want{{"addons.metallb.pools[0].myASN", 12, "is required in bgp mode", SeverityError}, {"addons.metallb.pools[0].peers", 12, "at least one peer", SeverityError}}},
		{"unknown pool mode", doc("", `  metallb:
    pools: [{name: lan, addresses: [10.0.0.200/29], mode: L3}]`, ""),
			[]want{{"addons.metallb.pools[0].mode", 12, `unknown mode "L3"`, SeverityError}}},
		{"local pv unknown node", doc("", `  localPV:
    volumes: [{node: s2, name: data, path: /data, capacity: 1Gi}]`, ""),
			[]want{{"addons.localPV.volumes[0].node", 12, `no node named "s2" in nodes (did you mean s1?)`, SeverityError}}},
		{"local pv bad capacity", doc(`  - {name: s1, address: 10.0.0.1, role: server}
  - name: a1
    address: 10.0.0.2
    role: agent
    storage:
      local: [{name: data, path: /data, capacity: 60GB}]`, `  localPV: {}`, ""),
			[]want{{"nodes[1].storage.local[0].capacity", 13, `"60GB" is not a Kubernetes quantity`, SeverityError}}},
		{"local pv relative path", doc(`  - {name: s1, address: 10.0.0.1, role: server, storage: {local: [{name: d, path: data, capacity: 1Gi}]}}`, `  localPV: {}`, ""),
			[]want{{"nodes[0].storage.local[0].path", 8, "must be an absolute path", SeverityError}}},
		{"longhorn replicas above offering", doc("", `  longhorn: {replicas: 3}`, ""),
			[]want{{"addons.longhorn.replicas", 11, "3 replicas but only 1 node(s) offer Longhorn storage", SeverityError}}},
		{"longhorn without storage nodes", doc(`  - {name: s1, address: 10.0.0.1, role: server}`, `  longhorn: {}`, ""),
			[]want{{"addons.longhorn", 10, "no node offers Longhorn storage", SeverityError}}},
		{"canary not increasing", doc("", "", `  - {name: web, image: web:1, port: 80, expose: {host: web.home.arpa}, strategy: {type: canary, steps: [5, 50, 25, 100]}}`),
			[]want{{"apps[0].strategy.steps[2]", 14, "25 does not increase on the step before (50)", SeverityError}}},
		{"canary not ending at 100", doc("", "", `  - {name: web, image: web:1, port: 80, expose: {host: web.home.arpa}, strategy: {type: canary, steps: [5, 25, 50]}}`),
			[]want{{"apps[0].strategy.steps[2]", 14, "must end at 100", SeverityError}}},
		{"canary step out of range", doc("", "", `  - {name: web, image: web:1, port: 80, expose: {host: web.home.arpa}, strategy: {type: canary, steps: [0, 100]}}`),
			[]want{{"apps[0].strategy.steps[0]", 14, "not a percentage", SeverityError}}},
		{"ab needs one match", doc("", "", `  - {name: web, image: web:1, port: 80, expose: {host: web.home.arpa}, strategy: {type: ab, match: {header: X-V, cookie: v, value: b}}}`),
			[]want{{"apps[0].strategy.match", 14, "exactly one of header or cookie", SeverityError}}},
		{"shadow needs mirror", doc("", "", `  - {name: web, image: web:1, port: 80, expose: {host: web.home.arpa}, strategy: {type: shadow}}`),
			[]want{{"apps[0].strategy.mirror", 14, "shadow needs mirror", SeverityError}}},
		{"steps on rolling", doc("", "", `  - {name: web, image: web:1, port: 80, strategy: {type: rolling, steps: [100]}}`),
			[]want{{"apps[0].strategy.steps", 14, "only apply to the canary", SeverityError}}},
		{"version without v", strings.Replace(doc("", "", ""), "v1.33.5+k3s1", "1.33.5+k3s1", 1),
			[]want{{"cluster.k3s.version", 4, "did you mean v1.33.5+k3s1?", SeverityError}}},
		{"version without k3s suffix", strings.Replace(doc("", "", ""), "v1.33.5+k3s1", "v1.33.5", 1),
			[]want{{"cluster.k3s.version", 4, "did you mean v1.33.5+k3s1?", SeverityError}}},
		{"version word", strings.Replace(doc("", "", ""), "v1.33.5+k3s1", "latest", 1),
			[]want{{"cluster.k3s.version", 4, `"latest" is not a k3s version`, SeverityError}}},
		{"minor version ok", strings.Replace(doc("", "", ""), "v1.33.5+k3s1", "v1.33", 1), nil},
		{"wrong type", doc("", "", `  - {name: web, image: web:1, port: eighty}`),
			[]want{{"apps[0].port", 14, `expected a whole number, got "eighty"`, SeverityError}, {"apps[0].port", 14, "is required", SeverityError}}},
		{"list expected", doc(`  name: s1`, "", ""), []want{{"nodes", 8, "expected a list", SeverityError}, {"nodes", 7, "no nodes", SeverityError}}},
		{"bad host key", doc(`  - {name: s1, address: 10.0.0.1, role: server, hostKey: "MD5:aa:bb"}`, "", ""),
			[]want{{"nodes[0].hostKey", 8, "not a SHA256 host key fingerprint", SeverityError}}},
		{"bad taint", doc(`  - {name: s1, address: 10.0.0.1, role: server, taints: ["dedicated=gpu"]}`, "", ""),
			[]want{{"nodes[0].taints[0]", 8, "is not a taint", SeverityError}}},
		{"bad label", doc(`  - {name: s1, address: 10.0.0.1, role: server, labels: {"bad key!": x}}`, "", ""),
			[]want{{"nodes[0].labels.bad key!", 8, "not a valid label key", SeverityError}}},
		{"bad host key policy", strings.Replace(doc("", "", ""), "user: pi", "user: pi\n  hostKeyPolicy: yolo", 1),
			[]want{{"ssh.hostKeyPolicy", 7, `"yolo" is not a host key policy`, SeverityError}}},
		{"bad bastion", strings.Replace(doc("", "", ""), "user: pi", "user: pi\n  bastion: jump@host:99999", 1),
			[]want{{"ssh.bastion", 7, "not a TCP port", SeverityError}}},
		{"unknown disable", strings.Replace(doc("", "", ""), "version: v1.33.5+k3s1", "version: v1.33.5+k3s1\n    disable: [trafik]", 1),
			[]want{{"cluster.k3s.disable[0]", 5, "did you mean traefik?", SeverityError}}},
		{"token in plain text", strings.Replace(doc("", "", ""), "version: v1.33.5+k3s1", "version: v1.33.5+k3s1\n    token: hunter2", 1),
			[]want{{"cluster.k3s.token", 5, "plain text", SeverityWarning}}},
		{"missing name and version", "nodes:\n  - {name: s1, address: 10.0.0.1, role: server}\n",
			[]want{{"cluster.name", 1, "is required", SeverityError}, {"cluster.k3s.version", 1, "is required", SeverityError}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, got := parse(t, tc.text, nil)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(got), len(tc.want), render(got))
			}
			for _, w := range tc.want {
				if !hasProblem(got, w) {
					t.Errorf("missing problem %+v in:\n%s", w, render(got))
				}
			}
		})
	}
}

func hasProblem(ps Problems, w want) bool {
	for _, p := range ps {
		if p.Path == w.path && p.Line == w.line && p.Severity == w.sev && strings.Contains(p.Message, w.msg) && p.File == "rack.yaml" {
			return true
		}
	}
	return false
}

func render(ps Problems) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "  %s [%s]\n", p, p.Severity)
	}
	return b.String()
}

func TestEveryProblemReportedAtOnce(t *testing.T) {
	text := doc(`  - {name: s1, address: 10.0.0.1, role: sever, arch: x86}
  - {name: s1, address: 10.0.0.1, role: agent}`, `  longhorn: {replicas: 5}`,
		`  - {name: web, image: web:1, port: 80, strategy: {type: canary, steps: [50, 10]}}`)
	_, ps := parse(t, text, nil)
	for _, path := range []string{"nodes[0].role", "nodes[0].arch", "nodes[1].name", "nodes[1].address", "addons.longhorn", "apps[0].strategy.steps[1]"} {
		found := false
		for _, p := range ps {
			found = found || p.Path == path
		}
		if !found {
			t.Errorf("no problem at %s in:\n%s", path, render(ps))
		}
	}
	// Sorted top to bottom.
	for i := 1; i < len(ps); i++ {
		if ps[i].Line < ps[i-1].Line {
			t.Fatalf("problems not sorted by line:\n%s", render(ps))
		}
	}
}

func TestEnvExpansion(t *testing.T) {
	text := strings.Replace(doc("", "", ""), "version: v1.33.5+k3s1", "version: v1.33.5+k3s1\n    token: ${RACK_K3S_TOKEN}", 1)
	inv, ps := parse(t, text, map[string]string{"RACK_K3S_TOKEN": "s3cret"})
	if len(ps) != 0 {
		t.Fatalf("unexpected problems:\n%s", render(ps))
	}
	if inv.Cluster.K3s.Token != "s3cret" {
		t.Fatalf("token = %q, want the expanded value", inv.Cluster.K3s.Token)
	}
	_, ps = parse(t, text, nil)
	if len(ps) != 1 || ps[0].Path != "cluster.k3s.token" || ps[0].Line != 5 || !strings.Contains(ps[0].Message, "RACK_K3S_TOKEN is not set") {
		t.Fatalf("want one error naming RACK_K3S_TOKEN at line 5, got:\n%s", render(ps))
	}
	for _, p := range ps {
		if strings.Contains(p.String(), "s3cret") {
			t.Fatal("a problem message leaks the secret")
		}
	}
}

func TestDefaults(t *testing.T) {
	text := `cluster:
  name: lab
  k3s: {version: v1.33, disable: [traefik]}
ssh: {user: pi, port: 2222, sudo: true, hostKeyPolicy: strict}
nodes:
  - {name: a0, address: 10.0.0.9, role: agent, storage: {longhorn: /l}}
  - {name: s1, address: 10.0.0.1, role: server, storage: {longhorn: /l}}
  - {name: s2, address: 10.0.0.2, role: server, ssh: {user: root, sudo: false}, storage: {longhorn: /l}}
  - {name: s3, address: 10.0.0.3, role: server, storage: {longhorn: /l}}
  - {name: a1, address: 10.0.0.4, role: agent, storage: {longhorn: /l}}
addons:
  metallb: {pools: [{name: lan, addresses: [10.0.0.200/29]}]}
  longhorn: {}
  localPV: {}
  argocd: {repo: "https://example.invalid/gitops"}
apps:
  - {name: web, image: web:1, port: 80}
`
	inv, ps := parse(t, text, nil)
	if len(ps) != 0 {
		t.Fatalf("unexpected problems:\n%s", render(ps))
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"apiEndpoint is the first server", inv.Cluster.APIEndpoint, "10.0.0.1"},
		{"servicelb and local-storage disabled with metallb and default longhorn", strings.Join(inv.Cluster.K3s.Disable, ","), "traefik,servicelb,local-storage"},
		{"longhorn replicas min(3, offering)", inv.Addons.Longhorn.Replicas, 3},
		{"longhorn default class", inv.Addons.Longhorn.IsDefaultClass(), true},
		{"pool mode", inv.Addons.MetalLB.Pools[0].Mode, ModeL2},
		{"local storage class", inv.Addons.LocalPV.StorageClass, DefaultLocalStorageClass},
		{"argocd revision", inv.Addons.ArgoCD.Revision, "HEAD"},
		{"app replicas", inv.Apps[0].Replicas, 1},
		{"app strategy", inv.Apps[0].Strategy.Type, StrategyRolling},
		{"node inherits ssh user", inv.Nodes[1].SSH.User, "pi"},
		{"node inherits ssh port", inv.Nodes[2].SSH.Port, 2222},
		{"node overrides ssh user", inv.Nodes[2].SSH.User, "root"},
		{"node overrides sudo", inv.Nodes[2].SSH.UseSudo(), false},
		{"node inherits sudo", inv.Nodes[1].SSH.UseSudo(), true},
		{"where", inv.Where("nodes[2].ssh.user"), "rack.yaml:8"},
	}
	for _, c := range checks {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestExamplesValidate(t *testing.T) {
	for _, f := range []string{"rack.yaml", "examples/single-node.yaml", "examples/ha.yaml"} {
		t.Run(f, func(t *testing.T) {
			inv, ps, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(ps) != 0 {
				t.Fatalf("example has problems:\n%s", render(ps))
			}
			if len(inv.Nodes) == 0 || len(inv.Servers()) == 0 {
				t.Fatal("example has no nodes")
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, _, err := Load("does/not/exist.yaml")
	if err == nil || !strings.Contains(err.Error(), "does/not/exist.yaml does not exist") {
		t.Fatalf("err = %v", err)
	}
}

func TestDidYouMean(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{"adress", " (did you mean address?)"},
		{"identityfile", " (did you mean identityFile?)"},
		{"xyzzy", ""},
	} {
		if got := didYouMean(tc.got, []string{"name", "address", "identityFile", "role"}); got != tc.want {
			t.Errorf("didYouMean(%q) = %q, want %q", tc.got, got, tc.want)
		}
	}
}

// One jump-host parser for validation and connections, OpenSSH's syntax.
func TestParseJump(t *testing.T) {
	cases := []struct {
		in   string
		want []Hop
		bad  string
	}{
		{"jump@gw:2200", []Hop{{"jump", "gw", 2200}}, ""},
		{"gw", []Hop{{"", "gw", 0}}, ""},
		{"u@gw1:22,gw2", []Hop{{"u", "gw1", 22}, {"", "gw2", 0}}, ""},
		{"[fe80::1]:22", []Hop{{"", "fe80::1", 22}}, ""},
		{"admin@[fd00::1]", []Hop{{"admin", "fd00::1", 0}}, ""},
		{"fd00::1", []Hop{{"", "fd00::1", 0}}, ""},
		{"ssh://u@h:2222", []Hop{{"u", "h", 2222}}, ""},
		{" a , b ", []Hop{{"", "a", 0}, {"", "b", 0}}, ""},
		{"u@h:notaport", nil, `port "notaport"`},
		{"u@h:0", nil, `port "0"`},
		{"u@", nil, "not an address"},
		{"@h", nil, "empty user"},
		{"[fe80::1:22", nil, "closing ]"},
		{"a,,b", nil, "not an address"},
		{"bad host:22", nil, "not an address"},
	}
	for _, tc := range cases {
		got, err := ParseJump(tc.in)
		if tc.bad != "" {
			if err == nil || !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("ParseJump(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.bad)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseJump(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}
