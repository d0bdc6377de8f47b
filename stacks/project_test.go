package stacks

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/config"
	"github.com/pulumi/pulumi/sdk/v3/go/common/workspace"

	"github.com/homelab/rack/inventory"
)

// TestPulumiYAML loads the root project files the way the pulumi CLI does
// (schema-validated), so `pulumi up` from a clone finds the program.
func TestPulumiYAML(t *testing.T) {
	proj, err := workspace.LoadProject("../Pulumi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if proj.Name != Project || proj.Runtime.Name() != "go" {
		t.Errorf("project %s runtime %s, want %s on go", proj.Name, proj.Runtime.Name(), Project)
	}
	if _, err := os.Stat(filepath.Join("..", proj.Main, "main.go")); err != nil {
		t.Errorf("main %q: %v", proj.Main, err)
	}
	if c, ok := proj.Config["inventory"]; !ok || c.Default != inventory.DefaultPath {
		t.Errorf("config inventory = %+v, want default %s", c, inventory.DefaultPath)
	}

	stack, err := workspace.LoadProjectStack(nil, proj, "../Pulumi.homelab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for k, v := range stack.Config {
		if k.String() == "rack:inventory" {
			s, _ := v.Value(config.NopDecrypter)
			found = s == "inventory/rack.yaml"
		}
	}
	if !found {
		t.Errorf("Pulumi.homelab.yaml does not set rack:inventory: %v", stack.Config)
	}
}
