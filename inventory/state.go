package inventory

import (
	"fmt"
	"os"
	"path/filepath"
)

// State is where rack keeps a cluster's local state: .rack/<cluster>/ beside
// the inventory file. It is the one place these paths are spelled out. Back
// the folder up: a rebuilt server needs the same token, and the Pulumi state
// is encrypted with the passphrase kept here.
type State struct {
	// Dir is .rack/<cluster> (0700).
	Dir string
}

// State is this inventory's state folder.
func (inv *Inventory) State() State { return State{Dir: inv.StateDir()} }

// StateDir is .rack/<cluster> beside the inventory file.
func (inv *Inventory) StateDir() string {
	return filepath.Join(inv.Dir(), ".rack", inv.Cluster.Name)
}

// Token is the generated cluster token (0600), when the inventory sets none.
func (s State) Token() string { return filepath.Join(s.Dir, "token") }

// Kubeconfig is rack's own copy of the cluster's admin kubeconfig (0600).
func (s State) Kubeconfig() string { return filepath.Join(s.Dir, "kubeconfig") }

// PulumiPassphrase encrypts the secrets in the Pulumi state (0600).
func (s State) PulumiPassphrase() string { return filepath.Join(s.Dir, "pulumi-passphrase") }

// PulumiBackend is the folder of the default file:// backend.
func (s State) PulumiBackend() string { return filepath.Join(s.Dir, "state") }

// PulumiWork holds Pulumi.yaml and Pulumi.<stack>.yaml (its salt).
func (s State) PulumiWork() string { return filepath.Join(s.Dir, "pulumi") }

// UserCache is <user cache folder>/rack/<name> (~/.cache/rack/<name>,
// XDG_CACHE_HOME honoured): rack's machine-wide cache (k3s binaries, the
// refreshed version catalog, the pulumi version per binary), shared by
// every cluster. what names the cache in the error.
func UserCache(name, what string) (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache folder for %s: %w (set XDG_CACHE_HOME)", what, err)
	}
	return filepath.Join(dir, "rack", name), nil
}
