package release_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/apps/release"
	"github.com/homelab/rack/inventory"
)

// memStore keeps states in memory; fail makes the next Apply fail.
type memStore struct {
	states  map[string]release.State
	applied []map[string]release.State
	fail    error
}

func (s *memStore) Load(context.Context) (map[string]release.State, error) {
	return maps.Clone(s.states), nil
}

func (s *memStore) Apply(_ context.Context, st map[string]release.State) error {
	if s.fail != nil {
		return s.fail
	}
	s.states = maps.Clone(st)
	s.applied = append(s.applied, maps.Clone(st))
	return nil
}

// scriptedGate passes or fails in order, and records what it was asked.
type scriptedGate struct {
	verdicts []release.Verdict
	asked    []release.State
	healthy  bool
}

func (g *scriptedGate) Check(_ context.Context, _ inventory.App, st release.State) release.Verdict {
	g.asked = append(g.asked, st)
	if len(g.verdicts) == 0 {
		return release.Verdict{Passed: true}
	}
	v := g.verdicts[0]
	g.verdicts = g.verdicts[1:]
	return v
}

func (g *scriptedGate) Health(context.Context, inventory.App, release.State) (bool, string) {
	if g.healthy {
		return true, ""
	}
	return false, "Deployment web-green is not Available"
}

func canaryInventory() *inventory.Inventory {
	return &inventory.Inventory{File: "rack.yaml", Apps: []inventory.App{{
		Name: "web", Image: "web:2", Port: 80, Replicas: 2,
		Expose:   &inventory.Expose{Host: "web.home.arpa"},
		Strategy: inventory.Strategy{Type: inventory.StrategyCanary, Steps: []int{5, 25, 50, 100}, Check: "/ready"},
	}, {
		Name: "db", Image: "postgres:16", Port: 5432, Strategy: inventory.Strategy{Type: inventory.StrategyRecreate},
	}}}
}

// deployed is the rack after rack up with web:1, then web:2 deployed.
func deployed(t *testing.T, inv *inventory.Inventory) map[string]release.State {
	t.Helper()
	v1 := *inv
	v1.Apps = []inventory.App{inv.Apps[0], inv.Apps[1]}
	v1.Apps[0].Image = "web:1"
	st, err := release.Deploy(&v1, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err = release.Deploy(inv, st)
	if err != nil {
		t.Fatal(err)
	}
	if st["web"].Candidate != "web:2" {
		t.Fatalf("deploy: %+v", st["web"])
	}
	return st
}

func TestPromoteOneStep(t *testing.T) {
	inv := canaryInventory()
	store := &memStore{states: deployed(t, inv)}
	gate := &scriptedGate{verdicts: []release.Verdict{{Passed: true, Restarts: map[string]int32{"web-green-a": 1}}}}
	var log strings.Builder
	r := &release.Runner{Inventory: inv, Store: store, Gate: gate, Log: &log}
	st, err := r.Promote(context.Background(), "web", false, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Step != 1 || st.Candidate != "web:2" || store.states["web"].Step != 1 {
		t.Errorf("after one promote: %+v (stored %+v), want step 1", st, store.states["web"])
	}
	if st.Restarts["web-green-a"] != 1 {
		t.Errorf("the restart counts the gate saw were not recorded with the step: %v", st.Restarts)
	}
	if len(store.applied) != 1 || store.applied[0]["db"].Release != store.states["db"].Release {
		t.Errorf("applied %d times; db must be applied as saved", len(store.applied))
	}
	if !strings.Contains(log.String(), "web: step 2 of 4: 25% of requests to web:2") {
		t.Errorf("log:\n%s", log.String())
	}
}

func TestPromoteAutoWalksEveryStep(t *testing.T) {
	inv := canaryInventory()
	store := &memStore{states: deployed(t, inv)}
	gate := &scriptedGate{}
	var slept []time.Duration
	r := &release.Runner{Inventory: inv, Store: store, Gate: gate,
		Sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }}
	st, err := r.Promote(context.Background(), "web", true, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.Stable != "web:2" || st.Candidate != "" || st.Colour != apps.Green {
		t.Errorf("after --auto: %+v, want web:2 released in green", st)
	}
	// 5 → 25 → 50 → 100 → released: four promotes, a gate before each.
	if len(gate.asked) != 4 || len(store.applied) != 4 || len(slept) != 3 {
		t.Errorf("%d gates, %d applies, %d waits; want 4, 4, 3", len(gate.asked), len(store.applied), len(slept))
	}
	for i, st := range gate.asked {
		if st.Step != i {
			t.Errorf("gate %d saw step %d", i, st.Step)
		}
	}
}

func TestPromoteGateFails(t *testing.T) {
	inv := canaryInventory()
	failing := release.Verdict{Reason: "Deployment web-green is not Available (0 of 2 pods ready)"}

	t.Run("without --auto nothing moves", func(t *testing.T) {
		store := &memStore{states: deployed(t, inv)}
		r := &release.Runner{Inventory: inv, Store: store, Gate: &scriptedGate{verdicts: []release.Verdict{failing}}}
		st, err := r.Promote(context.Background(), "web", false, 0)
		var gerr *release.GateError
		if !errors.As(err, &gerr) || gerr.RolledBack {
			t.Fatalf("error %v, want a GateError without rollback", err)
		}
		if !strings.Contains(err.Error(), failing.Reason) || !strings.Contains(err.Error(), "rack app rollback web") {
			t.Errorf("error %q does not give the reason and the way out", err)
		}
		if len(store.applied) != 0 || st.Candidate != "web:2" {
			t.Errorf("a failed gate applied %d times (state %+v)", len(store.applied), st)
		}
	})

	t.Run("--auto rolls back", func(t *testing.T) {
		store := &memStore{states: deployed(t, inv)}
		gate := &scriptedGate{verdicts: []release.Verdict{{Passed: true}, failing}}
		r := &release.Runner{Inventory: inv, Store: store, Gate: gate, Sleep: func(context.Context, time.Duration) error { return nil }}
		st, err := r.Promote(context.Background(), "web", true, time.Second)
		var gerr *release.GateError
		if !errors.As(err, &gerr) || !gerr.RolledBack {
			t.Fatalf("error %v, want a GateError with the release rolled back", err)
		}
		if !strings.Contains(err.Error(), "rolled back (all traffic on web:1") {
			t.Errorf("error %q", err)
		}
		want := apps.Release{Stable: "web:1", Colour: apps.Blue, RolledBack: "web:2"}
		if st.Release != want || store.states["web"].Release != want {
			t.Errorf("after the rollback %+v (stored %+v), want %+v", st.Release, store.states["web"].Release, want)
		}
		if len(store.applied) != 2 {
			t.Errorf("applied %d times, want the step and the rollback", len(store.applied))
		}
	})

	t.Run("a step that cannot be applied stays where it was", func(t *testing.T) {
		store := &memStore{states: deployed(t, inv), fail: errors.New("pulumi up failed")}
		r := &release.Runner{Inventory: inv, Store: store, Gate: &scriptedGate{}}
		st, err := r.Promote(context.Background(), "web", false, 0)
		if err == nil || !strings.Contains(err.Error(), "stays where it was") || st.Step != 0 {
			t.Errorf("promote with a failing apply: %+v, %v", st, err)
		}
	})
}

func TestPromoteRefusals(t *testing.T) {
	inv := canaryInventory()
	ctx := context.Background()
	states := deployed(t, inv)
	for _, tt := range []struct {
		name   string
		states map[string]release.State
		app    string
		want   string
	}{
		{"unknown app", states, "blog", `no app "blog" in rack.yaml (it has web, db)`},
		{"never deployed", map[string]release.State{}, "web", "web has no release yet: run rack up"},
		{"no candidate", map[string]release.State{"web": {Release: apps.Release{Stable: "web:1", Colour: apps.Blue}}}, "web", "no candidate to promote"},
		{"in-place strategy", states, "db", "recreate replaces the version at once"},
		{"an app left the inventory", map[string]release.State{"web": states["web"], "old": {Release: apps.Release{Stable: "old:1"}}}, "web", "old left the inventory since the last rack up"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store := &memStore{states: tt.states}
			r := &release.Runner{Inventory: inv, Store: store, Gate: &scriptedGate{}}
			_, err := r.Promote(ctx, tt.app, true, 0)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
			if len(store.applied) != 0 {
				t.Error("a refused promote applied something")
			}
		})
	}
}

func TestRollback(t *testing.T) {
	inv := canaryInventory()
	ctx := context.Background()

	t.Run("candidate", func(t *testing.T) {
		store := &memStore{states: deployed(t, inv)}
		r := &release.Runner{Inventory: inv, Store: store, Gate: &scriptedGate{}}
		st, err := r.Rollback(ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		if st.Candidate != "" || st.Stable != "web:1" || st.RolledBack != "web:2" {
			t.Errorf("rolled back: %+v", st)
		}
		// rack up does not deploy web:2 again.
		again, err := release.Deploy(inv, store.states)
		if err != nil || again["web"].Candidate != "" {
			t.Errorf("rack up after the rollback deployed %+v (%v)", again["web"], err)
		}
	})

	t.Run("a rack up that failed before recording its candidate", func(t *testing.T) {
		// web:2 never became Available: rack up failed, the saved state has no candidate.
		store := &memStore{states: map[string]release.State{"web": {Release: apps.Release{Stable: "web:1", Colour: apps.Blue}}, "db": {Release: apps.Release{Stable: "postgres:16"}}}}
		r := &release.Runner{Inventory: inv, Store: store, Gate: &scriptedGate{}}
		st, err := r.Rollback(ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		if st.RolledBack != "web:2" || len(store.applied) != 1 {
			t.Errorf("rolled back %+v, applied %d: want web:2 marked and the stray objects removed by one apply", st, len(store.applied))
		}
	})

	t.Run("nothing to roll back", func(t *testing.T) {
		store := &memStore{states: map[string]release.State{"web": {Release: apps.Release{Stable: "web:2", Colour: apps.Green}}, "db": {Release: apps.Release{Stable: "postgres:16"}}}}
		r := &release.Runner{Inventory: inv, Store: store, Gate: &scriptedGate{}}
		if _, err := r.Rollback(ctx, "web"); err == nil || !strings.Contains(err.Error(), "no candidate to roll back") {
			t.Errorf("error %v", err)
		}
	})
}

func TestStatus(t *testing.T) {
	inv := canaryInventory()
	store := &memStore{states: deployed(t, inv)}
	r := &release.Runner{Inventory: inv, Store: store, Gate: &scriptedGate{}}
	st, err := r.Status(context.Background(), "web")
	if err != nil {
		t.Fatal(err)
	}
	if st.Healthy || st.Reason == "" || st.Step == nil || *st.Step != 0 || st.Weights.Candidate != 5 {
		t.Errorf("status %+v", st)
	}
}

func TestStateRoundTrip(t *testing.T) {
	st := release.State{Release: apps.Release{Stable: "a:1", Candidate: "a:2", Step: 2, Colour: apps.Green}, Restarts: map[string]int32{"p": 3}}
	got, err := release.Decode(map[string]any{"web": release.Encode(st)})
	if err != nil {
		t.Fatal(err)
	}
	if got["web"].Release != st.Release || got["web"].Restarts["p"] != 3 {
		t.Errorf("round trip %+v, want %+v", got["web"], st)
	}
	if _, err := release.Decode(map[string]any{"web": "not a state"}); err == nil || !strings.Contains(err.Error(), "run rack up") {
		t.Errorf("a broken saved state: %v", err)
	}
}

// An app that leaves the inventory leaves the saved states with the next
// rack up, so the same name added back later starts fresh: stable on its
// image, no candidate, in the first slot (the traffic tests add and remove
// the same app many times).
func TestDeployForgetsRemovedApps(t *testing.T) {
	inv := canaryInventory()
	st := deployed(t, inv)
	promoted, err := apps.Promote(inv.Apps[0], st["web"].Release)
	if err != nil {
		t.Fatal(err)
	}
	st["web"] = release.State{Release: promoted}

	without := *inv
	without.Apps = inv.Apps[1:]
	st, err = release.Deploy(&without, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st["web"]; ok || len(st) != 1 {
		t.Fatalf("states after web left the inventory: %+v", st)
	}

	back := *inv
	back.Apps = []inventory.App{inv.Apps[0], inv.Apps[1]}
	back.Apps[0].Image = "web:1"
	st, err = release.Deploy(&back, st)
	if err != nil {
		t.Fatal(err)
	}
	if want := (apps.Release{Stable: "web:1", Colour: apps.Blue}); st["web"].Release != want {
		t.Fatalf("web added back: %+v, want a fresh %+v", st["web"].Release, want)
	}
}
