// Package release walks an app's release forward and back against a real
// cluster: the health gates before every step (read from the API, and the
// app's own route), promote (one step, or every step with --auto, rolling
// back by itself when a gate fails), rollback and status. It holds no
// rendering (apps does, purely) and no Pulumi (a Store delivers): the apps
// stack and rack render's GitOps output are Stores.
package release

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/homelab/rack/apps"
)

// State is one app's release state as it is kept with the apps stack.
type State struct {
	apps.Release
	// Restarts is the container restart count of each candidate pod when
	// the release last stepped (deployed or promoted). The gate before the
	// next step fails on any restart since; a pod missing here started
	// after that step and is held to zero.
	Restarts map[string]int32 `json:"restarts,omitempty"`
}

// Store keeps every app's State and delivers it to the cluster.
type Store interface {
	// Load returns the saved state of every app ever deployed, by name.
	Load(ctx context.Context) (map[string]State, error)
	// Apply delivers states (by app name; an inventory app missing from
	// states is not delivered) and records them, only once delivered: an
	// interrupted or failed Apply leaves the states Load returned before.
	Apply(ctx context.Context, states map[string]State) error
}

// Decode reads the states kept as a stack output (any JSON-shaped value).
func Decode(v any) (map[string]State, error) {
	out := map[string]State{}
	if v == nil {
		return out, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("the saved release states are not readable (%v): run rack up to write them again", err)
	}
	return out, nil
}

// Encode is the JSON-shaped value of a State, as a stack output keeps it.
func Encode(st State) map[string]any {
	b, err := json.Marshal(st)
	if err != nil {
		panic(fmt.Sprintf("release: marshal %T: %v", st, err)) // plain strings and ints always marshal
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(fmt.Sprintf("release: unmarshal: %v", err))
	}
	return m
}
