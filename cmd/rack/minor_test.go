package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homelab/rack/inventory"
)

// A minor in cluster.k3s.version means the newest release of that minor in
// the catalog (--catalog FILE, or rack's own); one the catalog does not
// know is refused at the inventory's line.
func TestMinorResolvesThroughTheCatalog(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir()) // no refreshed catalog of the machine's
	dir := t.TempDir()
	cat := filepath.Join(dir, "catalog.yaml")
	if err := os.WriteFile(cat, []byte(`generated: 2026-12-02
channels: {stable: v1.34.2+k3s1}
minors:
  - {minor: "1.34", released: 2025-08-27, eol: 2026-10-27, patches: [v1.34.1+k3s1, v1.34.2+k3s1, v1.34.2+k3s2]}
  - {minor: "1.33", released: 2025-04-23, eol: 2026-06-28, patches: [v1.33.4+k3s1]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, version, file, want, wantErr string
	}{
		{"minor, --catalog", "v1.34", cat, "v1.34.2+k3s2", ""},
		{"minor, rack's own catalog", "v1.36", "", "v1.36.5+k3s1", ""},
		{"exact release untouched", "v1.33.5+k3s1", cat, "v1.33.5+k3s1", ""},
		{"minor the catalog lacks", "v1.31", cat, "", "rack.yaml:3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "rack.yaml")
			text := "cluster:\n  name: lab\n  k3s: {version: " + tc.version + "}\nssh: {user: pi}\nnodes:\n  - {name: s1, address: 10.0.0.1, role: server}\n"
			if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			inv, ps, err := inventory.Load(file)
			if err != nil || ps.HasErrors() {
				t.Fatalf("%v %v", err, ps)
			}
			var errb bytes.Buffer
			err = resolveMinor(&globals{stderr: &errb}, inv, tc.file)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "not in rack's catalog") {
					t.Fatalf("error %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := inv.Cluster.K3s.Version; got != tc.want {
				t.Errorf("version %s, want %s", got, tc.want)
			}
			if inventory.IsK3sMinor(tc.version) != strings.Contains(errb.String(), tc.want) {
				t.Errorf("note: %q", errb.String())
			}
		})
	}
}
