package release

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/internal/sleep"
	"github.com/homelab/rack/inventory"
)

// Gater is what the Runner asks before a step and for status; *Gate is
// the real one.
type Gater interface {
	Check(ctx context.Context, app inventory.App, st State) Verdict
	Health(ctx context.Context, app inventory.App, st State) (bool, string)
}

// Runner promotes, rolls back and reports the apps of one inventory.
type Runner struct {
	Inventory *inventory.Inventory
	Store     Store
	Gate      Gater
	// Log receives one line per gate and step (nil discards them).
	Log io.Writer
	// Verbose logs every check a gate passed, too.
	Verbose bool
	// Sleep waits between the steps of --auto (default: a timer that
	// ctx cancels).
	Sleep func(ctx context.Context, d time.Duration) error
}

// GateError is a promote refused by a health gate.
type GateError struct {
	App    string
	Reason string
	// RolledBack is set when --auto rolled the release back.
	RolledBack bool
	// Stable is the image clients reach now.
	Stable string
}

func (e *GateError) Error() string {
	if e.RolledBack {
		return fmt.Sprintf("%s: a health gate failed, so the release was rolled back (all traffic on %s, the candidate removed): %s", e.App, e.Stable, e.Reason)
	}
	return fmt.Sprintf("%s: a health gate failed, nothing was promoted: %s; fix it and promote again, or run rack app rollback %s", e.App, e.Reason, e.App)
}

// Status is what `rack app status` prints: apps.Status with health from
// the cluster.
type Status struct {
	apps.Status
	// Reason says why the app is not healthy.
	Reason string `json:"reason,omitempty"`
}

func (r *Runner) logf(format string, args ...any) {
	if r.Log != nil {
		fmt.Fprintf(r.Log, format+"\n", args...)
	}
}

func (r *Runner) sleep(ctx context.Context, d time.Duration) error {
	if r.Sleep != nil {
		return r.Sleep(ctx, d)
	}
	return sleep.For(ctx, d)
}

// app finds name in the inventory.
func (r *Runner) app(name string) (inventory.App, error) {
	var names []string
	for _, a := range r.Inventory.Apps {
		if a.Name == name {
			return a, nil
		}
		names = append(names, a.Name)
	}
	list := "it has none"
	if len(names) > 0 {
		list = "it has " + strings.Join(names, ", ")
	}
	return inventory.App{}, fmt.Errorf("no app %q in %s (%s)", name, r.Inventory.File, list)
}

// load finds the app and returns the saved states, refusing states the
// inventory no longer has an app for: a promote must not remove another
// app as a side effect.
func (r *Runner) load(ctx context.Context, name string) (inventory.App, map[string]State, State, error) {
	app, err := r.app(name)
	if err != nil {
		return app, nil, State{}, err
	}
	states, err := r.Store.Load(ctx)
	if err != nil {
		return app, nil, State{}, err
	}
	var gone []string
	for n := range states {
		if !slices.ContainsFunc(r.Inventory.Apps, func(a inventory.App) bool { return a.Name == n }) {
			gone = append(gone, n)
		}
	}
	if len(gone) > 0 {
		sort.Strings(gone)
		return app, nil, State{}, fmt.Errorf("app(s) %s left the inventory since the last rack up, which would remove them: run rack up first", strings.Join(gone, ", "))
	}
	st, ok := states[name]
	if !ok || st.Stable == "" {
		return app, nil, State{}, fmt.Errorf("%s has no release yet: run rack up to deploy it", name)
	}
	return app, states, st, nil
}

// Status reports the app's release state and health.
func (r *Runner) Status(ctx context.Context, name string) (Status, error) {
	app, err := r.app(name)
	if err != nil {
		return Status{}, err
	}
	states, err := r.Store.Load(ctx)
	if err != nil {
		return Status{}, err
	}
	st, ok := states[name]
	if !ok || st.Stable == "" {
		return Status{}, fmt.Errorf("%s has no release yet: run rack up to deploy it", name)
	}
	s, err := apps.StatusOf(app, st.Release)
	if err != nil {
		return Status{}, err
	}
	out := Status{Status: s}
	out.Healthy, out.Reason = r.Gate.Health(ctx, app, st)
	return out, nil
}

// Promote advances name's release one step after its gate passes; with
// auto, it walks every step, waiting interval between them, and rolls the
// release back when a gate fails (a *GateError either way).
func (r *Runner) Promote(ctx context.Context, name string, auto bool, interval time.Duration) (State, error) {
	app, states, st, err := r.load(ctx, name)
	if err != nil {
		return State{}, err
	}
	for {
		if _, err := apps.Promote(app, st.Release); err != nil {
			return st, err // nothing to promote: the error says what to do
		}
		v := r.Gate.Check(ctx, app, st)
		if ctx.Err() != nil {
			return st, ctx.Err()
		}
		if !v.Passed {
			r.logf("%s: gate failed: %s", name, v.Reason)
			gerr := &GateError{App: name, Reason: v.Reason, Stable: st.Stable}
			if !auto {
				return st, gerr
			}
			rolled, err := r.rollback(ctx, app, states, st)
			if err != nil {
				return st, errors.Join(gerr, fmt.Errorf("and the rollback failed: %w", err))
			}
			gerr.RolledBack = true
			return rolled, gerr
		}
		if r.Verbose {
			for _, p := range v.Passes {
				r.logf("%s: gate: %s", name, p)
			}
		}
		rel, err := apps.Promote(app, st.Release)
		if err != nil {
			return st, err
		}
		next := State{Release: rel}
		if rel.Candidate != "" {
			next.Restarts = v.Restarts
		}
		states[name] = next
		if err := r.Store.Apply(ctx, states); err != nil {
			states[name] = st
			return st, fmt.Errorf("%s: the gate passed, but delivering the next step failed (the release stays where it was): %w", name, err)
		}
		st = next
		r.logf("%s", describe(app, st))
		if !auto || st.Candidate == "" {
			return st, nil
		}
		r.logf("%s: next gate in %v", name, interval)
		if err := r.sleep(ctx, interval); err != nil {
			return st, err
		}
	}
}

// Rollback returns all traffic to the stable version and removes the
// candidate. When the saved state has no candidate but the inventory names
// an image that is neither stable nor rolled back (a rack up that failed
// while the candidate never became ready), that image is marked rolled
// back and the stray candidate removed.
func (r *Runner) Rollback(ctx context.Context, name string) (State, error) {
	app, states, st, err := r.load(ctx, name)
	if err != nil {
		return State{}, err
	}
	return r.rollback(ctx, app, states, st)
}

func (r *Runner) rollback(ctx context.Context, app inventory.App, states map[string]State, st State) (State, error) {
	s, _ := apps.StrategyFor(app.Strategy.Type)
	var rel apps.Release
	switch {
	case st.Candidate == "" && s != nil && s.SideBySide() && app.Image != st.Stable && app.Image != st.RolledBack:
		rel = st.Release
		rel.RolledBack = app.Image
		r.logf("%s: no candidate was recorded, but the inventory names %s: marking it rolled back and removing what a failed rack up left of it", app.Name, app.Image)
	default:
		var err error
		if rel, err = apps.Rollback(app, st.Release); err != nil {
			return st, err
		}
	}
	next := State{Release: rel}
	states[app.Name] = next
	if err := r.Store.Apply(ctx, states); err != nil {
		states[app.Name] = st
		return st, fmt.Errorf("%s: rolling back failed (the release stays where it was): %w", app.Name, err)
	}
	r.logf("%s: rolled back: all traffic on %s; %s stays out until the inventory names another image", app.Name, rel.Stable, rel.RolledBack)
	return next, nil
}

// describe is one line about where a release stands.
func describe(app inventory.App, st State) string {
	if st.Candidate == "" {
		return fmt.Sprintf("%s: released: all traffic on %s", app.Name, st.Stable)
	}
	s, _ := apps.StatusOf(app, st.Release)
	switch {
	case s.Step != nil:
		return fmt.Sprintf("%s: step %d of %d: %d%% of requests to %s", app.Name, *s.Step+1, len(app.Strategy.Steps), s.Weights.Candidate, st.Candidate)
	default:
		return fmt.Sprintf("%s: candidate %s beside %s", app.Name, st.Candidate, st.Stable)
	}
}
