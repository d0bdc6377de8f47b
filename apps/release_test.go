package apps_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/inventory"
)

func webApp(typ string) inventory.App {
	app := inventory.App{
		Name: "web", Image: "web:1", Port: 3000, Replicas: 4,
		Expose:   &inventory.Expose{Host: "web.home.arpa"},
		Strategy: inventory.Strategy{Type: typ, Check: "/healthz"},
	}
	switch typ {
	case inventory.StrategyCanary:
		app.Strategy.Steps = []int{5, 25, 50, 100}
	case inventory.StrategyAB:
		app.Strategy.Match = &inventory.Match{Header: "X-Variant", Value: "b"}
	case inventory.StrategyShadow:
		app.Strategy.Mirror = 10
	}
	return app
}

// op is one thing that happens to a release.
type op struct {
	do    string // deploy IMAGE | promote | rollback
	image string
}

func apply(t *testing.T, app inventory.App, rel apps.Release, o op) (apps.Release, error) {
	t.Helper()
	switch o.do {
	case "deploy":
		app.Image = o.image
		return apps.Deploy(app, rel)
	case "promote":
		return apps.Promote(app, rel)
	case "rollback":
		return apps.Rollback(app, rel)
	}
	t.Fatalf("unknown op %q", o.do)
	return rel, nil
}

func statusJSON(t *testing.T, app inventory.App, rel apps.Release) string {
	t.Helper()
	st, err := apps.StatusOf(app, rel)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTransitions walks every strategy through deploy, each promote and
// rollback, checking the state and what `rack app status -o json` prints
// after every step.
func TestTransitions(t *testing.T) {
	type step struct {
		op
		want    apps.Release
		status  string // JSON, healthy left false
		wantErr string
	}
	deploy := func(img string) op { return op{do: "deploy", image: img} }
	promote, rollback := op{do: "promote"}, op{do: "rollback"}

	tests := []struct {
		strategy string
		steps    []step
	}{
		{inventory.StrategyRecreate, []step{
			{deploy("web:1"), apps.Release{Stable: "web:1"},
				`{"name":"web","strategy":"recreate","stable":"web:1","candidate":null,"step":null,"active":null,"weights":{"stable":100,"candidate":0},"healthy":false}`, ""},
			{deploy("web:2"), apps.Release{Stable: "web:2"},
				`{"name":"web","strategy":"recreate","stable":"web:2","candidate":null,"step":null,"active":null,"weights":{"stable":100,"candidate":0},"healthy":false}`, ""},
			{promote, apps.Release{Stable: "web:2"}, "", "apps[web].strategy.type: recreate replaces the version at once, there is no candidate to promote"},
			{rollback, apps.Release{Stable: "web:2"}, "", "apps[web].strategy.type: recreate replaces the version at once, there is no candidate to roll back"},
		}},
		{inventory.StrategyRolling, []step{
			{deploy("web:1"), apps.Release{Stable: "web:1"}, "", ""},
			{deploy("web:2"), apps.Release{Stable: "web:2"},
				`{"name":"web","strategy":"rolling","stable":"web:2","candidate":null,"step":null,"active":null,"weights":{"stable":100,"candidate":0},"healthy":false}`, ""},
			{promote, apps.Release{Stable: "web:2"}, "", "rolling replaces the version at once"},
		}},
		{inventory.StrategyBlueGreen, []step{
			{deploy("web:1"), apps.Release{Stable: "web:1", Colour: apps.Blue},
				`{"name":"web","strategy":"blue-green","stable":"web:1","candidate":null,"step":null,"active":"blue","weights":{"stable":100,"candidate":0},"healthy":false}`, ""},
			{promote, apps.Release{Stable: "web:1", Colour: apps.Blue}, "", "apps[web].image: no candidate to promote: web:1 is the stable image"},
			{deploy("web:2"), apps.Release{Stable: "web:1", Candidate: "web:2", Colour: apps.Blue},
				`{"name":"web","strategy":"blue-green","stable":"web:1","candidate":"web:2","step":null,"active":"blue","weights":{"stable":100,"candidate":0},"healthy":false}`, ""},
			// flipped
			{promote, apps.Release{Stable: "web:2", Colour: apps.Green},
				`{"name":"web","strategy":"blue-green","stable":"web:2","candidate":null,"step":null,"active":"green","weights":{"stable":100,"candidate":0},"healthy":false}`, ""},
			{deploy("web:2"), apps.Release{Stable: "web:2", Colour: apps.Green}, "", ""},
			{deploy("web:3"), apps.Release{Stable: "web:2", Candidate: "web:3", Colour: apps.Green}, "", ""},
			// rolled back: web:3 stays out until the inventory names another image
			{rollback, apps.Release{Stable: "web:2", Colour: apps.Green, RolledBack: "web:3"},
				`{"name":"web","strategy":"blue-green","stable":"web:2","candidate":null,"step":null,"active":"green","weights":{"stable":100,"candidate":0},"healthy":false,"rolledBack":"web:3"}`, ""},
			{deploy("web:3"), apps.Release{Stable: "web:2", Colour: apps.Green, RolledBack: "web:3"}, "", ""},
			{rollback, apps.Release{Stable: "web:2", Colour: apps.Green, RolledBack: "web:3"}, "", "no candidate to roll back"},
			{deploy("web:4"), apps.Release{Stable: "web:2", Candidate: "web:4", Colour: apps.Green}, "", ""},
			{promote, apps.Release{Stable: "web:4", Colour: apps.Blue}, "", ""},
		}},
		{inventory.StrategyCanary, []step{
			{deploy("web:1"), apps.Release{Stable: "web:1", Colour: apps.Blue},
				`{"name":"web","strategy":"canary","stable":"web:1","candidate":null,"step":null,"active":null,"weights":{"stable":100,"candidate":0},"healthy":false}`, ""},
			{deploy("web:2"), apps.Release{Stable: "web:1", Candidate: "web:2", Colour: apps.Blue},
				`{"name":"web","strategy":"canary","stable":"web:1","candidate":"web:2","step":0,"active":null,"weights":{"stable":95,"candidate":5},"healthy":false}`, ""},
			{promote, apps.Release{Stable: "web:1", Candidate: "web:2", Step: 1, Colour: apps.Blue},
				`{"name":"web","strategy":"canary","stable":"web:1","candidate":"web:2","step":1,"active":null,"weights":{"stable":75,"candidate":25},"healthy":false}`, ""},
			// a re-run of rack up with the same inventory changes nothing
			{deploy("web:2"), apps.Release{Stable: "web:1", Candidate: "web:2", Step: 1, Colour: apps.Blue}, "", ""},
			{promote, apps.Release{Stable: "web:1", Candidate: "web:2", Step: 2, Colour: apps.Blue},
				`{"name":"web","strategy":"canary","stable":"web:1","candidate":"web:2","step":2,"active":null,"weights":{"stable":50,"candidate":50},"healthy":false}`, ""},
			{promote, apps.Release{Stable: "web:1", Candidate: "web:2", Step: 3, Colour: apps.Blue},
				`{"name":"web","strategy":"canary","stable":"web:1","candidate":"web:2","step":3,"active":null,"weights":{"stable":0,"candidate":100},"healthy":false}`, ""},
			// the promote after the last step completes the release
			{promote, apps.Release{Stable: "web:2", Colour: apps.Green},
				`{"name":"web","strategy":"canary","stable":"web:2","candidate":null,"step":null,"active":null,"weights":{"stable":100,"candidate":0},"healthy":false}`, ""},
			{deploy("web:3"), apps.Release{Stable: "web:2", Candidate: "web:3", Colour: apps.Green}, "", ""},
			{promote, apps.Release{Stable: "web:2", Candidate: "web:3", Step: 1, Colour: apps.Green}, "", ""},
			// a newer candidate replaces the old one and starts at the first step
			{deploy("web:4"), apps.Release{Stable: "web:2", Candidate: "web:4", Colour: apps.Green}, "", ""},
			{promote, apps.Release{Stable: "web:2", Candidate: "web:4", Step: 1, Colour: apps.Green}, "", ""},
			{rollback, apps.Release{Stable: "web:2", Colour: apps.Green, RolledBack: "web:4"},
				`{"name":"web","strategy":"canary","stable":"web:2","candidate":null,"step":null,"active":null,"weights":{"stable":100,"candidate":0},"healthy":false,"rolledBack":"web:4"}`, ""},
		}},
		{inventory.StrategyAB, []step{
			{deploy("web:1"), apps.Release{Stable: "web:1", Colour: apps.Blue}, "", ""},
			{deploy("web:2"), apps.Release{Stable: "web:1", Candidate: "web:2", Colour: apps.Blue},
				`{"name":"web","strategy":"ab","stable":"web:1","candidate":"web:2","step":null,"active":null,"weights":{"stable":100,"candidate":0},"healthy":false}`, ""},
			// the inventory set back to the stable image withdraws the candidate
			{deploy("web:1"), apps.Release{Stable: "web:1", Colour: apps.Blue}, "", ""},
			{deploy("web:2"), apps.Release{Stable: "web:1", Candidate: "web:2", Colour: apps.Blue}, "", ""},
			{promote, apps.Release{Stable: "web:2", Colour: apps.Green}, "", ""},
		}},
		{inventory.StrategyShadow, []step{
			{deploy("web:1"), apps.Release{Stable: "web:1", Colour: apps.Blue}, "", ""},
			{deploy("web:2"), apps.Release{Stable: "web:1", Candidate: "web:2", Colour: apps.Blue},
				`{"name":"web","strategy":"shadow","stable":"web:1","candidate":"web:2","step":null,"active":null,"weights":{"stable":100,"candidate":0},"healthy":false}`, ""},
			{rollback, apps.Release{Stable: "web:1", Colour: apps.Blue, RolledBack: "web:2"}, "", ""},
			{deploy("web:3"), apps.Release{Stable: "web:1", Candidate: "web:3", Colour: apps.Blue}, "", ""},
			{promote, apps.Release{Stable: "web:3", Colour: apps.Green}, "", ""},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.strategy, func(t *testing.T) {
			app := webApp(tt.strategy)
			var rel apps.Release
			for i, s := range tt.steps {
				got, err := apply(t, app, rel, s.op)
				if s.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), s.wantErr) {
						t.Fatalf("step %d %s: error %v, want one containing %q", i, s.do, err, s.wantErr)
					}
					continue // a refused step leaves the release as it was
				}
				if err != nil {
					t.Fatalf("step %d %s: %v", i, s.do, err)
				}
				if got != s.want {
					t.Fatalf("step %d %s %s: release\n got %+v\nwant %+v", i, s.do, s.image, got, s.want)
				}
				rel = got
				if s.do == "deploy" {
					app.Image = s.image
				}
				if s.status != "" {
					if got := statusJSON(t, app, rel); got != s.status {
						t.Fatalf("step %d %s: status\n got %s\nwant %s", i, s.do, got, s.status)
					}
				}
			}
		})
	}
}

// The release state round-trips through JSON (it is kept with the stack),
// and the zero fields stay out of it.
func TestReleaseJSON(t *testing.T) {
	rel := apps.Release{Stable: "web:1", Candidate: "web:2", Step: 2, Colour: apps.Green}
	b, err := json.Marshal(rel)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"stable":"web:1","candidate":"web:2","step":2,"colour":"green"}`; string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
	var back apps.Release
	if err := json.Unmarshal(b, &back); err != nil || back != rel {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
}

// Switching strategy keeps what still makes sense: from a side-by-side
// strategy to rolling, the inventory's image becomes stable at once.
func TestDeployAcrossStrategies(t *testing.T) {
	canary := webApp(inventory.StrategyCanary)
	rel, _ := apps.Deploy(canary, apps.Release{})
	canary.Image = "web:2"
	rel, _ = apps.Deploy(canary, rel)
	rel, _ = apps.Promote(canary, rel)
	rel, _ = apps.Promote(canary, rel)
	rel, _ = apps.Promote(canary, rel)

	// Fewer steps now: the step is kept within them.
	fewer := canary
	fewer.Strategy.Steps = []int{50, 100}
	got, err := apps.Deploy(fewer, rel)
	if err != nil || got.Step != 1 || got.Candidate != "web:2" {
		t.Fatalf("steps shortened: %+v, %v", got, err)
	}

	// Rolling: web:2 replaces at once; no candidate, no colour.
	rolling := webApp(inventory.StrategyRolling)
	rolling.Image = "web:2"
	if got, _ := apps.Deploy(rolling, rel); got != (apps.Release{Stable: "web:2"}) {
		t.Fatalf("to rolling: %+v", got)
	}
	// A state left by canary cannot be rendered as rolling without Deploy.
	if _, err := apps.Render(rolling, rel, apps.Options{}); err == nil || !strings.Contains(err.Error(), "run rack up") {
		t.Fatalf("stale state rendered: %v", err)
	}

	// Blue-green from a canary mid-release: the candidate stays in its slot.
	bg := webApp(inventory.StrategyBlueGreen)
	bg.Image = "web:2"
	got, err = apps.Deploy(bg, rel)
	if err != nil || got != (apps.Release{Stable: "web:1", Candidate: "web:2", Colour: apps.Blue}) {
		t.Fatalf("to blue-green: %+v, %v", got, err)
	}
}

func TestDeployments(t *testing.T) {
	app := webApp(inventory.StrategyCanary)
	rel, _ := apps.Deploy(app, apps.Release{})
	app.Image = "web:2"
	rel, _ = apps.Deploy(app, rel)
	for _, tt := range []struct {
		rel               apps.Release
		stable, candidate string
	}{
		{rel, "web-blue", "web-green"},
		{mustPromoteAll(t, app, rel), "web-green", ""},
	} {
		s, c, err := apps.Deployments(app, tt.rel)
		if err != nil || s != tt.stable || c != tt.candidate {
			t.Errorf("%+v: %q %q %v, want %q %q", tt.rel, s, c, err, tt.stable, tt.candidate)
		}
	}
	if s, c, _ := apps.Deployments(webApp(inventory.StrategyRolling), apps.Release{Stable: "web:1"}); s != "web" || c != "" {
		t.Errorf("rolling: %q %q", s, c)
	}
}

func mustPromoteAll(t *testing.T, app inventory.App, rel apps.Release) apps.Release {
	t.Helper()
	for rel.Candidate != "" {
		var err error
		if rel, err = apps.Promote(app, rel); err != nil {
			t.Fatal(err)
		}
	}
	return rel
}
