// Command gen writes the embedded k3s version catalog (catalog.yaml) from the
// facts in sources.yaml. Run it through `go generate ./nodes/k3s/catalog`.
package main

import (
	"fmt"
	"os"

	"github.com/homelab/rack/nodes/k3s/catalog"
)

func main() {
	data, err := os.ReadFile(catalog.SourcesFile)
	if err != nil {
		fail(fmt.Errorf("%w (run it from nodes/k3s/catalog, through go generate)", err))
	}
	out, err := catalog.Generate(data)
	if err != nil {
		fail(err)
	}
	if err := os.WriteFile(catalog.EmbeddedFile, out, 0o644); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gen:", err)
	os.Exit(1)
}
