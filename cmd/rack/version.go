package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/homelab/rack/nodes/k3s/catalog"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

type versionInfo struct {
	Version  string          `json:"version"`
	Go       string          `json:"go"`
	Platform string          `json:"platform"`
	K3s      []string        `json:"k3s"` // every release in the catalog, newest first
	Catalog  *versionCatalog `json:"catalog,omitempty"`
}

type versionCatalog struct {
	Source    string           `json:"source"`
	Generated string           `json:"generated"`
	Channels  catalog.Channels `json:"channels"`
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
	var file string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print rack's version and the k3s versions it knows",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(*cobra.Command, []string) error {
			info := versionInfo{
				Version:  rackVersion(),
				Go:       runtime.Version(),
				Platform: runtime.GOOS + "/" + runtime.GOARCH,
				K3s:      []string{},
			}
			// The catalog rack plans with: embedded, plus a refresh when cached.
			c, origin, err := catalog.Open(file)
			if err != nil {
				return fail(err)
			}
			if origin.Warning != "" {
				fmt.Fprintln(g.stderr, "rack: warning:", origin.Warning)
			}
			all := c.Versions()
			for i := len(all) - 1; i >= 0; i-- { // newest first
				info.K3s = append(info.K3s, all[i].String())
			}
			info.Catalog = &versionCatalog{Source: origin.Description, Generated: c.Generated.String(), Channels: c.Channels}
			if g.output == outputJSON {
				return fail(writeJSON(g.stdout, info))
			}
			fmt.Fprintf(g.stdout, "rack %s (%s, %s)\n", info.Version, info.Go, info.Platform)
			if len(c.Minors) == 0 {
				fmt.Fprintln(g.stdout, "k3s versions: none known")
				return nil
			}
			fmt.Fprintf(g.stdout, "k3s versions: %d releases of %s … %s, from the %s catalog\n",
				len(all), c.Minors[len(c.Minors)-1].Minor, c.Minors[0].Minor, origin.Description)
			if !c.Channels.Stable.IsZero() || !c.Channels.Latest.IsZero() {
				fmt.Fprintf(g.stdout, "  channels: stable %s, latest %s\n", dash(c.Channels.Stable.String()), dash(c.Channels.Latest.String()))
			}
			var newest []string
			for _, m := range c.Minors {
				if p, ok := m.Newest(); ok {
					newest = append(newest, p.String())
				}
			}
			fmt.Fprintf(g.stdout, "  newest of each minor: %s\n", strings.Join(newest, " "))
			fmt.Fprintln(g.stdout, "  (rack versions shows the support window; rack versions --refresh fetches new releases)")
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "catalog", "", "read the k3s version catalog from FILE instead of rack's own")
	return cmd
}
