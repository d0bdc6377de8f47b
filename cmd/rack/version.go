package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

type versionInfo struct {
	Version  string   `json:"version"`
	Go       string   `json:"go"`
	Platform string   `json:"platform"`
	K3s      []string `json:"k3s"`
}

func rackVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print rack's version and the k3s versions it knows",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(*cobra.Command, []string) error {
			info := versionInfo{
				Version:  rackVersion(),
				Go:       runtime.Version(),
				Platform: runtime.GOOS + "/" + runtime.GOARCH,
				K3s:      []string{}, // filled from the version catalog once rack ships one
			}
			if g.output == outputJSON {
				return fail(writeJSON(g.stdout, info))
			}
			fmt.Fprintf(g.stdout, "rack %s (%s, %s)\n", info.Version, info.Go, info.Platform)
			if len(info.K3s) == 0 {
				fmt.Fprintln(g.stdout, "k3s versions: none known (this build has no version catalog)")
			}
			return nil
		},
	}
}
