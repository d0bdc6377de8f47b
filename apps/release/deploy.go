package release

import (
	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/inventory"
)

// Deploy is what `rack up` does to the saved states: apps.Deploy for every
// inventory app (an image change starts a candidate, or replaces the
// version for recreate and rolling). A new candidate starts with no
// restarts recorded; an unchanged one keeps its record.
func Deploy(inv *inventory.Inventory, saved map[string]State) (map[string]State, error) {
	out := map[string]State{}
	for _, app := range inv.Apps {
		prev := saved[app.Name]
		rel, err := apps.Deploy(app, prev.Release)
		if err != nil {
			return nil, err
		}
		st := State{Release: rel}
		if rel.Candidate != "" && rel.Candidate == prev.Candidate {
			st.Restarts = prev.Restarts
		}
		out[app.Name] = st
	}
	return out, nil
}
