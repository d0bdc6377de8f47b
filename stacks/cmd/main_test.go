package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadResolvesAgainstProjectRoot(t *testing.T) {
	// go test runs here, in stacks/cmd, as the engine runs the program: the
	// default rack:inventory must still name the root's inventory.
	inv, err := load("inventory/rack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if inv.Cluster.Name != "homelab" {
		t.Errorf("loaded cluster %q", inv.Cluster.Name)
	}
}

func TestLoadRefusesInvalidInventory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rack.yaml")
	if err := os.WriteFile(path, []byte("cluster: {name: x}\nnodes: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := load(path)
	if err == nil || !strings.Contains(err.Error(), "rack inventory validate") {
		t.Fatalf("error %v, want the validation problems", err)
	}
}
