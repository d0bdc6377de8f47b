package k3s

import (
	"os"
	"path/filepath"
	"testing"
)

func TestTokenGeneratedOnceAndPrivate(t *testing.T) {
	dir := t.TempDir()
	inv := testInventory(t, "cluster: {name: lab, k3s: {version: v1.33.5+k3s1}}\nnodes: [{name: s, address: 10.0.0.1, role: server}]\n")
	inv.File = filepath.Join(dir, "rack.yaml")
	a, err := Token(inv)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 64 {
		t.Fatalf("token of %d hex chars, want 64 (32 random bytes)", len(a))
	}
	path := filepath.Join(dir, ".rack", "lab", "token")
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file %v %v", st, err)
	}
	if d, _ := os.Stat(filepath.Dir(path)); d.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode %v", d.Mode().Perm())
	}
	os.Chmod(path, 0o644)
	b, err := Token(inv)
	if err != nil || b != a {
		t.Fatalf("second call gave another token (%v)", err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("loosened token file not tightened: %v", st.Mode().Perm())
	}
	inv.Cluster.K3s.Token = "from-env"
	if c, _ := Token(inv); c != "from-env" {
		t.Fatal("the inventory's token must win")
	}
}
