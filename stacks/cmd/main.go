// Command cmd is the rack platform as a plain Pulumi program, so that
// `pulumi up` works from a clone (Pulumi.yaml points here). It reads the
// inventory named by the stack config rack:inventory.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/config"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/stacks"
)

func main() {
	pulumi.Run(func(ctx *pulumi.Context) error {
		path := config.New(ctx, "rack").Get("inventory")
		if path == "" {
			path = inventory.DefaultPath
		}
		inv, err := load(path)
		if err != nil {
			return err
		}
		return stacks.Program(inv)(ctx)
	})
}

// load reads the inventory; a relative path is taken from the project root
// (where Pulumi.yaml is), not from this program's folder the engine runs in.
func load(path string) (*inventory.Inventory, error) {
	if !filepath.IsAbs(path) {
		if root, ok := projectRoot(); ok {
			path = filepath.Join(root, path)
		}
	}
	inv, problems, err := inventory.Load(path)
	if err != nil {
		return nil, err
	}
	if problems.HasErrors() {
		return nil, fmt.Errorf("the inventory is not valid (rack inventory validate -i %s):\n%v", path, problems)
	}
	return inv, nil
}

func projectRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "Pulumi.yaml")); err == nil {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}
