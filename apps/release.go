package apps

import (
	"fmt"

	"github.com/homelab/rack/inventory"
)

// Colour names a slot of the side-by-side strategies.
type Colour string

// The two slots.
const (
	Blue  Colour = "blue"
	Green Colour = "green"
)

// Other returns the slot that is not c.
func (c Colour) Other() Colour {
	if c == Green {
		return Blue
	}
	return Green
}

// Release is the release state of one app, kept with the stack so that
// `rack app status` and a re-run of `rack up` agree. The zero Release is an
// app never deployed. Transitions are pure: Deploy, Promote, Rollback.
type Release struct {
	// Stable is the image that serves clients (all of them, except the
	// canary's share or the A/B match).
	Stable string `json:"stable"`
	// Candidate is the deployed but unreleased image; "" when none.
	Candidate string `json:"candidate,omitempty"`
	// Step is the canary's index into strategy.steps while a candidate
	// exists: steps[Step] percent of requests go to the candidate.
	Step int `json:"step,omitempty"`
	// Colour is the slot the stable version runs in (side-by-side
	// strategies only); the candidate runs in Colour.Other().
	Colour Colour `json:"colour,omitempty"`
	// RolledBack is the image last rolled back: Deploy does not start it
	// again while the inventory still names it.
	RolledBack string `json:"rolledBack,omitempty"`
}

// Weights is the split of client requests, in percent.
type Weights struct {
	Stable    int `json:"stable"`
	Candidate int `json:"candidate"`
}

// Status is what `rack app status NAME -o json` prints.
type Status struct {
	Name      string  `json:"name"`
	Strategy  string  `json:"strategy"`
	Stable    string  `json:"stable"`
	Candidate *string `json:"candidate"`
	// Step is the canary's index into strategy.steps, null otherwise.
	Step *int `json:"step"`
	// Active is the blue-green colour clients reach, null otherwise.
	Active  *string `json:"active"`
	Weights Weights `json:"weights"`
	// Healthy is filled by the caller from the cluster; the renderer cannot know.
	Healthy bool `json:"healthy"`
	// RolledBack is the image last rolled back, which the inventory may
	// still name: it explains why that image is not running.
	RolledBack string `json:"rolledBack,omitempty"`
}

// StatusOf describes rel for `rack app status`; Healthy is left false.
func StatusOf(app inventory.App, rel Release) (Status, error) {
	s, err := strategyOf(app)
	if err != nil {
		return Status{}, err
	}
	st := Status{Name: app.Name, Strategy: s.Type(), Stable: rel.Stable, Weights: s.Weights(app, rel), RolledBack: rel.RolledBack}
	if rel.Candidate != "" {
		c := rel.Candidate
		st.Candidate = &c
		if s.Type() == inventory.StrategyCanary {
			n := rel.Step
			st.Step = &n
		}
	}
	if s.Type() == inventory.StrategyBlueGreen {
		a := string(colourOr(rel.Colour))
		st.Active = &a
	}
	return st, nil
}

// Deployments names the Deployments of the stable version and of the
// candidate ("" when there is none), for health gates and status.
func Deployments(app inventory.App, rel Release) (stable, candidate string, err error) {
	s, err := strategyOf(app)
	if err != nil {
		return "", "", err
	}
	if !s.SideBySide() {
		return app.Name, "", nil
	}
	b := &builder{app: app}
	c := colourOr(rel.Colour)
	if rel.Candidate != "" {
		candidate = b.slotName(c.Other())
	}
	return b.slotName(c), candidate, nil
}

// Deploy returns the release after `rack up` with app as the inventory now
// says: a fresh app starts stable on its image; recreate and rolling replace
// the stable image at once; the side-by-side strategies start a changed
// image as the candidate (at the first canary step). Setting the image back
// to the stable one withdraws the candidate; an image rolled back is not
// started again until the inventory names another.
func Deploy(app inventory.App, prev Release) (Release, error) {
	s, err := strategyOf(app)
	if err != nil {
		return Release{}, err
	}
	if app.Image == "" {
		return Release{}, problem(app, "image", "is required: the container image with its tag, like %s:1.0.0", app.Name)
	}
	if !s.SideBySide() {
		return Release{Stable: app.Image}, nil
	}
	if prev.Stable == "" {
		return Release{Stable: app.Image, Colour: Blue}, nil
	}
	r := prev
	r.Colour = colourOr(r.Colour)
	switch app.Image {
	case r.Stable:
		r.Candidate, r.Step, r.RolledBack = "", 0, ""
	case r.Candidate:
		// Unchanged; the steps may have been edited since.
		r.Step = clampStep(app, s, r.Step)
	case r.RolledBack:
		// Stays rolled back until the inventory names another image.
	default:
		r.Candidate, r.Step, r.RolledBack = app.Image, 0, ""
	}
	if r.Candidate == "" {
		r.Step = 0
	}
	return r, nil
}

// Promote advances the release one step: the next canary weight, the
// blue-green flip, A/B or shadow to the full release. The promote that
// completes the release makes the candidate stable (its slot becomes the
// stable slot) and the old stable's objects are no longer rendered.
func Promote(app inventory.App, rel Release) (Release, error) {
	s, err := strategyOf(app)
	if err != nil {
		return Release{}, err
	}
	if err := hasCandidate(app, s, rel, "promote"); err != nil {
		return Release{}, err
	}
	return s.Promote(app, rel), nil
}

// Rollback returns all traffic to the stable version and withdraws the
// candidate; its image is remembered so that the next `rack up` does not
// deploy it again.
func Rollback(app inventory.App, rel Release) (Release, error) {
	s, err := strategyOf(app)
	if err != nil {
		return Release{}, err
	}
	if err := hasCandidate(app, s, rel, "roll back"); err != nil {
		return Release{}, err
	}
	rel.RolledBack, rel.Candidate, rel.Step = rel.Candidate, "", 0
	return rel, nil
}

func hasCandidate(app inventory.App, s Strategy, rel Release, verb string) error {
	if !s.SideBySide() {
		return problem(app, "strategy.type", "%s replaces the version at once, there is no candidate to %s: put the image you want in the inventory and run rack up", s.Type(), verb)
	}
	if rel.Candidate == "" {
		return problem(app, "image", "no candidate to %s: %s is the stable image; change the image in the inventory and run rack up to deploy one", verb, rel.Stable)
	}
	return nil
}

// finish completes a release: the candidate's slot becomes the stable slot.
func finish(rel Release) Release {
	return Release{Stable: rel.Candidate, Colour: colourOr(rel.Colour).Other()}
}

func colourOr(c Colour) Colour {
	if c == "" {
		return Blue
	}
	return c
}

func clampStep(app inventory.App, s Strategy, step int) int {
	if s.Type() != inventory.StrategyCanary {
		return 0
	}
	if n := len(app.Strategy.Steps); step >= n {
		return max(n-1, 0)
	}
	return max(step, 0)
}

// Problem is something in an app's inventory entry that stops rendering.
type Problem struct {
	App string
	// Key is the path below the app, like strategy.steps.
	Key     string
	Message string
}

func (p *Problem) Error() string { return fmt.Sprintf("apps[%s].%s: %s", p.App, p.Key, p.Message) }

func problem(app inventory.App, key, format string, args ...any) *Problem {
	return &Problem{App: app.Name, Key: key, Message: fmt.Sprintf(format, args...)}
}
