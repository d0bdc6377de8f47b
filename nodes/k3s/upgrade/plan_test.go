package upgrade

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/homelab/rack/nodes/k3s/catalog"
)

// testCatalog is small and fixed, so the tables below do not move when the
// embedded catalog learns new releases.
const testCatalog = `generated: 2026-01-01
channels: {stable: v1.33.9+k3s1, latest: v1.34.2+k3s2}
minors:
  - {minor: "1.34", released: 2025-08-27, eol: 2026-10-27, patches: [v1.34.1+k3s1, v1.34.2+k3s1, v1.34.2+k3s2]}
  - {minor: "1.33", released: 2025-04-23, eol: 2026-06-28, patches: [v1.33.5+k3s1, v1.33.5+k3s2, v1.33.9+k3s1]}
  - minor: "1.32"
    released: 2024-12-11
    eol: 2026-02-28
    patches: [v1.32.9+k3s1, v1.32.13+k3s1]
    removedAPIs:
      - {group: flowcontrol.apiserver.k8s.io, version: v1beta3, kind: FlowSchema, replacement: flowcontrol.apiserver.k8s.io/v1}
  - {minor: "1.31", released: 2024-08-13, eol: 2025-11-11, patches: [v1.31.4+k3s1, v1.31.14+k3s1]}
  - {minor: "1.30", released: 2024-04-17, eol: 2025-07-15, patches: [v1.30.14+k3s2]}
`

var at = catalog.MustDate("2026-01-15") // 1.32, 1.33 and 1.34 are supported; 1.31 is not

func testCat(t *testing.T) *catalog.Catalog {
	t.Helper()
	c, err := catalog.Parse("test", []byte(testCatalog))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func s(name, version string) Node { return Node{Name: name, Role: "server", Version: version} }
func a(name, version string) Node { return Node{Name: name, Role: "agent", Version: version} }

func step(version string, servers int, nodes ...string) Step {
	if nodes == nil {
		nodes = []string{}
	}
	return Step{Version: version, Nodes: nodes, Servers: servers}
}

func TestMake(t *testing.T) {
	for _, tc := range []struct {
		name     string
		nodes    []Node
		from, to string
		want     Plan
	}{
		{
			name:  "patch only",
			nodes: []Node{s("s1", "v1.33.5+k3s1"), a("a1", "v1.33.5+k3s1")},
			to:    "v1.33.9+k3s1",
			want:  Plan{From: "v1.33.5+k3s1", To: "v1.33.9+k3s1", Steps: []Step{step("v1.33.9+k3s1", 1, "s1", "a1")}},
		},
		{
			name: "three minors, offline",
			from: "v1.31.4+k3s1", to: "v1.34.2+k3s2",
			want: Plan{From: "v1.31.4+k3s1", To: "v1.34.2+k3s2", Steps: []Step{
				step("v1.32.13+k3s1", 0), step("v1.33.9+k3s1", 0), step("v1.34.2+k3s2", 0)}},
		},
		{
			name:  "three minors, a cluster: every intermediate minor's newest release",
			nodes: []Node{s("s1", "v1.31.4+k3s1"), a("a1", "v1.31.14+k3s1")},
			to:    "v1.34.1+k3s1",
			want: Plan{From: "v1.31.4+k3s1", To: "v1.34.1+k3s1", Steps: []Step{
				step("v1.32.13+k3s1", 1, "s1", "a1"), step("v1.33.9+k3s1", 1, "s1", "a1"), step("v1.34.1+k3s1", 1, "s1", "a1")}},
		},
		{
			name:  "--to a minor picks its newest release",
			nodes: []Node{s("s1", "v1.33.9+k3s1")},
			to:    "v1.34",
			want:  Plan{From: "v1.33.9+k3s1", To: "v1.34.2+k3s2", Steps: []Step{step("v1.34.2+k3s2", 1, "s1")}},
		},
		{
			name:  "no --to is the stable channel",
			nodes: []Node{s("s1", "v1.32.9+k3s1")},
			want:  Plan{From: "v1.32.9+k3s1", To: "v1.33.9+k3s1", Steps: []Step{step("v1.33.9+k3s1", 1, "s1")}},
		},
		{
			name:  "no --to, cluster past the stable channel: finish at its newest version, never downgrade",
			nodes: []Node{s("s1", "v1.34.2+k3s2"), a("a1", "v1.34.1+k3s1")},
			want:  Plan{From: "v1.34.1+k3s1", To: "v1.34.2+k3s2", Steps: []Step{step("v1.34.2+k3s2", 0, "a1")}},
		},
		{
			name: "no --to, offline past the stable channel: nothing to do",
			from: "v1.34.1+k3s1",
			want: Plan{From: "v1.34.1+k3s1", To: "v1.34.1+k3s1", Steps: []Step{}},
		},
		{
			name:  "+k3s1 is older than +k3s2",
			nodes: []Node{s("s1", "v1.33.5+k3s1"), a("a1", "v1.33.5+k3s2")},
			to:    "v1.33.5+k3s2",
			want:  Plan{From: "v1.33.5+k3s1", To: "v1.33.5+k3s2", Steps: []Step{step("v1.33.5+k3s2", 1, "s1")}},
		},
		{
			name:  "partly upgraded: only what is left",
			nodes: []Node{s("s1", "v1.34.2+k3s2"), a("a1", "v1.33.9+k3s1"), a("a2", "v1.32.13+k3s1")},
			to:    "v1.34.2+k3s2",
			want: Plan{From: "v1.32.13+k3s1", To: "v1.34.2+k3s2", Steps: []Step{
				step("v1.33.9+k3s1", 0, "a2"), step("v1.34.2+k3s2", 0, "a1", "a2")}},
		},
		{
			name:  "partly upgraded HA: the servers still behind, then the agents",
			nodes: []Node{s("s1", "v1.34.2+k3s2"), s("s2", "v1.33.9+k3s1"), s("s3", "v1.33.9+k3s1"), a("a1", "v1.33.9+k3s1")},
			to:    "v1.34",
			want:  Plan{From: "v1.33.9+k3s1", To: "v1.34.2+k3s2", Steps: []Step{step("v1.34.2+k3s2", 2, "s2", "s3", "a1")}},
		},
		{
			name:  "HA: servers in the given order, one at a time, before any agent",
			nodes: []Node{a("a1", "v1.33.5+k3s1"), s("s1", "v1.33.5+k3s1"), a("a2", "v1.33.5+k3s1"), s("s2", "v1.33.5+k3s1"), s("s3", "v1.33.5+k3s1")},
			to:    "v1.33.9+k3s1",
			want:  Plan{From: "v1.33.5+k3s1", To: "v1.33.9+k3s1", Steps: []Step{step("v1.33.9+k3s1", 3, "s1", "s2", "s3", "a1", "a2")}},
		},
		{
			name:  "agents lagging (legal) catch up before the servers move on",
			nodes: []Node{s("s1", "v1.33.9+k3s1"), a("a1", "v1.30.14+k3s2")},
			to:    "v1.34",
			want: Plan{From: "v1.30.14+k3s2", To: "v1.34.2+k3s2", Steps: []Step{
				step("v1.31.14+k3s1", 0, "a1"), step("v1.32.13+k3s1", 0, "a1"), step("v1.33.9+k3s1", 0, "a1"), step("v1.34.2+k3s2", 1, "s1", "a1")}},
		},
		{
			name:  "already there",
			nodes: []Node{s("s1", "v1.33.9+k3s1"), a("a1", "v1.33.9+k3s1")},
			to:    "v1.33",
			want:  Plan{From: "v1.33.9+k3s1", To: "v1.33.9+k3s1", Steps: []Step{}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Make(Request{Catalog: testCat(t), Nodes: tc.nodes, From: tc.from, To: tc.to, At: at})
			if err != nil {
				t.Fatal(err)
			}
			for i := range got.Steps {
				got.Steps[i].RemovedAPIs = nil // checked in TestRemovedAPIs
			}
			if !equalPlans(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func equalPlans(a, b Plan) bool {
	return a.From == b.From && a.To == b.To && slices.EqualFunc(a.Steps, b.Steps, func(x, y Step) bool {
		return x.Version == y.Version && x.Servers == y.Servers && slices.Equal(x.Nodes, y.Nodes)
	})
}

func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		name        string
		nodes       []Node
		from, to    string
		reason, fix string
		faulty      []string // nodes the refusal must name
	}{
		{name: "downgrade", nodes: []Node{s("s1", "v1.33.9+k3s1"), a("a1", "v1.33.5+k3s1")}, to: "v1.33.5+k3s2",
			reason: "would downgrade", fix: "pick a target at or after", faulty: []string{"s1 v1.33.9+k3s1"}},
		{name: "downgrade by k3s revision", nodes: []Node{s("s1", "v1.33.5+k3s2")}, to: "v1.33.5+k3s1",
			reason: "would downgrade", faulty: []string{"s1 v1.33.5+k3s2"}},
		{name: "offline downgrade", from: "v1.34.1+k3s1", to: "v1.33.9+k3s1", reason: "is a downgrade"},
		{name: "EOL target", nodes: []Node{s("s1", "v1.30.14+k3s2")}, to: "v1.31",
			reason: "k3s 1.31 is not supported at 2026-01-15 (end of life 2025-11-11)", fix: "1.34, 1.33, 1.32"},
		{name: "unknown version", nodes: []Node{s("s1", "v1.33.5+k3s1")}, to: "v1.33.6+k3s1",
			reason: "not in the catalog", fix: "rack versions --refresh"},
		{name: "unknown minor", nodes: []Node{s("s1", "v1.33.5+k3s1")}, to: "v1.35", reason: "has no release in the catalog"},
		{name: "not a version", nodes: []Node{s("s1", "v1.33.5+k3s1")}, to: "1.34.2", reason: "is not a k3s version"},
		{name: "agent newer than a server", nodes: []Node{s("s1", "v1.33.9+k3s1"), s("s2", "v1.32.13+k3s1"), a("a1", "v1.33.5+k3s1"), a("a2", "v1.32.9+k3s1")}, to: "v1.34",
			reason: "newer than the oldest server (1.32)", faulty: []string{"a1 v1.33.5+k3s1"}},
		{name: "servers two minors apart", nodes: []Node{s("s1", "v1.34.1+k3s1"), s("s2", "v1.32.13+k3s1"), s("s3", "v1.33.9+k3s1")}, to: "v1.34",
			reason: "more than one minor apart", faulty: []string{"s2 v1.32.13+k3s1"}},
		{name: "agent four minors behind", nodes: []Node{s("s1", "v1.34.1+k3s1"), a("a1", "v1.30.14+k3s2"), a("a2", "v1.31.4+k3s1")}, to: "v1.34",
			reason: "more than 3 minors behind", faulty: []string{"a1 v1.30.14+k3s2"}},
		{name: "not a k3s node", nodes: []Node{s("s1", "v1.33.5+k3s1"), a("a1", "v1.33.5")}, to: "v1.34",
			reason: "not k3s releases", faulty: []string{`a1 "v1.33.5"`}},
		{name: "no server", nodes: []Node{a("a1", "v1.33.5+k3s1")}, to: "v1.34", reason: "no server"},
		{name: "nothing to plan", reason: "no nodes", fix: "--from"},
		{name: "bad --from", from: "v1.33", to: "v1.34", reason: "--from"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Make(Request{Catalog: testCat(t), Nodes: tc.nodes, From: tc.from, To: tc.to, At: at})
			var r *Refusal
			if !errors.As(err, &r) {
				t.Fatalf("want a refusal, got %v", err)
			}
			if !strings.Contains(r.Reason, tc.reason) || !strings.Contains(r.Fix, tc.fix) || r.Fix == "" {
				t.Fatalf("refusal %q / fix %q; want %q / %q", r.Reason, r.Fix, tc.reason, tc.fix)
			}
			if tc.faulty != nil && !slices.Equal(r.Nodes, tc.faulty) {
				t.Fatalf("names %v, want %v", r.Nodes, tc.faulty)
			}
		})
	}
}

func TestMissingIntermediateMinor(t *testing.T) {
	c, err := catalog.Parse("gap", []byte(`generated: 2026-01-01
minors:
  - {minor: "1.34", released: 2025-08-27, eol: 2026-10-27, patches: [v1.34.2+k3s1]}
  - {minor: "1.32", released: 2024-12-11, eol: 2026-02-28, patches: [v1.32.9+k3s1]}
`))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Make(Request{Catalog: c, From: "v1.32.9+k3s1", To: "v1.34.2+k3s1", At: at})
	if err == nil || !strings.Contains(err.Error(), "goes through k3s 1.33, which has no release in the catalog") {
		t.Fatalf("want a refusal naming 1.33: %v", err)
	}
}

func TestRemovedAPIsAndJSON(t *testing.T) {
	p, err := Make(Request{Catalog: testCat(t), From: "v1.31.4+k3s1", To: "v1.33", At: at})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Steps[0].RemovedAPIs) != 1 || p.Steps[0].RemovedAPIs[0].Kind != "FlowSchema" || len(p.Steps[1].RemovedAPIs) != 0 {
		t.Fatalf("removed APIs belong to the step entering 1.32: %+v", p.Steps)
	}
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var shape struct {
		From  *string `json:"from"`
		To    *string `json:"to"`
		Steps []struct {
			Version *string   `json:"version"`
			Nodes   *[]string `json:"nodes"`
		} `json:"steps"`
	}
	if err := json.Unmarshal(data, &shape); err != nil || shape.From == nil || shape.To == nil || len(shape.Steps) != 2 ||
		shape.Steps[0].Version == nil || shape.Steps[0].Nodes == nil || len(*shape.Steps[0].Nodes) != 0 {
		t.Fatalf("SPEC JSON shape: %s", data)
	}
	var text bytes.Buffer
	p.WriteText(&text, at)
	for _, want := range []string{"k3s v1.31.4+k3s1 → v1.33.9+k3s1, 2 step(s)", " 1. v1.32.13+k3s1  every node", "1.32 no longer serves flowcontrol.apiserver.k8s.io/v1beta3 FlowSchema (use flowcontrol.apiserver.k8s.io/v1)"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
}

// The examples' v1.33.5+k3s1 against the embedded catalog, on 2026-12-02.
func TestEmbeddedPathFromTheExamples(t *testing.T) {
	p, err := Make(Request{Catalog: catalog.Embedded(), Nodes: []Node{s("pinemaster", "v1.33.5+k3s1"), a("potato-7", "v1.33.5+k3s1")},
		At: catalog.MustDate("2026-12-02")})
	if err != nil {
		t.Fatal(err)
	}
	var versions []string
	for _, st := range p.Steps {
		versions = append(versions, st.Version)
	}
	if p.To != "v1.36.3+k3s1" || !slices.Equal(versions, []string{"v1.34.9+k3s1", "v1.35.6+k3s1", "v1.36.3+k3s1"}) {
		t.Fatalf("plan %s → %s via %v", p.From, p.To, versions)
	}
	if _, err := Make(Request{Catalog: catalog.Embedded(), From: "v1.33.5+k3s1", To: "v1.34", At: catalog.MustDate("2026-12-02")}); err == nil {
		t.Fatal("1.34 is past its end of life on 2026-12-02")
	}
}
