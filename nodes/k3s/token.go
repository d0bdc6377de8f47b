package k3s

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/homelab/rack/internal/atomicfile"
	"github.com/homelab/rack/inventory"
)

// Token is the cluster join token as planning finds it: the inventory's
// (usually ${RACK_K3S_TOKEN}), else the one rack generated earlier and keeps
// in .rack/<cluster>/token, else a new one of 32 random bytes that Keep
// writes there (0600) when the plan is carried out. The value is never
// printed; String hides it.
type Token struct {
	Value string
	// Fresh is set when the token was generated for this plan and is not
	// kept anywhere yet.
	Fresh bool
	Path  string
}

func (t Token) String() string { return "(the cluster token)" }

// ResolveToken finds or generates the token. It writes nothing: planning
// must change nothing.
func ResolveToken(inv *inventory.Inventory) (Token, error) {
	if t := inv.Cluster.K3s.Token; t != "" {
		return Token{Value: t}, nil
	}
	path := inv.State().Token()
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
			return Token{}, fmt.Errorf("%s is readable by other users (mode %v), and anyone holding it can join the cluster: chmod 600 %s (and consider a new token)", path, st.Mode().Perm(), path)
		}
		t := strings.TrimSpace(string(data))
		if t == "" {
			return Token{}, fmt.Errorf("%s is empty: restore it from a backup (the cluster was created with it) or delete it to start a new cluster", path)
		}
		return Token{Value: t, Path: path}, nil
	case !errors.Is(err, os.ErrNotExist):
		return Token{}, fmt.Errorf("read the cluster token: %w", err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return Token{}, err
	}
	return Token{Value: hex.EncodeToString(b), Fresh: true, Path: path}, nil
}

// Keep writes a fresh token to its file, 0600 in a 0700 folder. A token that
// is already kept (or comes from the inventory) is left alone.
func (t Token) Keep() error {
	if !t.Fresh {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(t.Path), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(t.Path), err)
	}
	if _, err := os.Stat(t.Path); err == nil {
		return fmt.Errorf("%s appeared while rack was planning (another rack run?): run again so the plan uses it", t.Path)
	}
	if err := atomicfile.Write(t.Path, []byte(t.Value+"\n"), 0o600); err != nil {
		return fmt.Errorf("keep the generated token in %s: %w", t.Path, err)
	}
	return nil
}

// configToken reads the token from an installed config.yaml ("" when none).
func configToken(config string) string {
	var m struct {
		Token string `yaml:"token"`
	}
	_ = yaml.Unmarshal([]byte(config), &m)
	return m.Token
}
