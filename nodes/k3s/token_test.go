package k3s

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Planning never writes the token: Keep does, once, 0600 in a 0700 folder.
func TestTokenGeneratedOnceAndPrivate(t *testing.T) {
	dir := t.TempDir()
	inv := testInventory(t, "cluster: {name: lab, k3s: {version: v1.33.5+k3s1}}\nnodes: [{name: s, address: 10.0.0.1, role: server}]\n")
	inv.File = filepath.Join(dir, "rack.yaml")
	a, err := ResolveToken(inv)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Value) != 64 || !a.Fresh {
		t.Fatalf("token of %d hex chars (fresh %v), want 64 (32 random bytes)", len(a.Value), a.Fresh)
	}
	path := filepath.Join(dir, ".rack", "lab", "token")
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Fatalf("resolving the token wrote %s", filepath.Dir(path))
	}
	if err := a.Keep(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file %v %v", st, err)
	}
	if d, _ := os.Stat(filepath.Dir(path)); d.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode %v", d.Mode().Perm())
	}
	b, err := ResolveToken(inv)
	if err != nil || b.Value != a.Value || b.Fresh {
		t.Fatalf("second resolve gave another token or a fresh one (%v)", err)
	}
	if err := b.Keep(); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644)
	if _, err := ResolveToken(inv); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a token file others can read: %v", err)
	}
	inv.Cluster.K3s.Token = "from-env"
	if c, _ := ResolveToken(inv); c.Value != "from-env" {
		t.Fatal("the inventory's token must win")
	}
	if strings.Contains(a.String(), a.Value) {
		t.Fatal("Token's String shows the value")
	}
}
