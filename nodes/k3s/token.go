package k3s

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
)

// Token returns the cluster join token: the inventory's (usually from
// ${RACK_K3S_TOKEN}), else the one rack generated earlier, else a new one of 32
// random bytes kept 0600 in .rack/<cluster>/token beside the inventory.
// The token is never printed.
func Token(inv *inventory.Inventory) (string, error) {
	if t := inv.Cluster.K3s.Token; t != "" {
		return t, nil
	}
	dir := inv.StateDir()
	path := filepath.Join(dir, "token")
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
			// Someone loosened it; a readable token lets anyone join the cluster.
			if err := os.Chmod(path, 0o600); err != nil {
				return "", fmt.Errorf("%s is readable by others and could not be made 0600: %w", path, err)
			}
		}
		t := strings.TrimSpace(string(data))
		if t == "" {
			return "", fmt.Errorf("%s is empty: restore it from a backup (the cluster was created with it) or delete it to start a new cluster", path)
		}
		return t, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("read the cluster token: %w", err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	t := hex.EncodeToString(b)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	if err := nodes.WriteFileAtomic(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keep the generated token in %s: %w", path, err)
	}
	return t, nil
}
