package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/homelab/rack/nodes/k3s/catalog"
)

// catalogFlags are the flags of every command that reads the version catalog.
type catalogFlags struct {
	file string
	at   string
}

func (f *catalogFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.file, "catalog", "", "read the k3s version catalog from FILE instead of rack's own (embedded, plus rack versions --refresh)")
	cmd.Flags().StringVar(&f.at, "at", "", "the date the support window is checked at, YYYY-MM-DD (default today)")
}

// date is --at, or today. A malformed date is bad usage (exit 2).
func (f *catalogFlags) date() (catalog.Date, error) {
	if f.at == "" {
		return catalog.Today(), nil
	}
	d, err := catalog.ParseDate(f.at)
	if err != nil {
		return catalog.Date{}, fmt.Errorf("--at: %v", err)
	}
	return d, nil
}

// read returns --at (or today) and the catalog; a cache rack had to set
// aside is reported on stderr.
func (f *catalogFlags) read(g *globals) (catalog.Date, *catalog.Catalog, catalog.Origin, error) {
	at, err := f.date()
	if err != nil {
		return at, nil, catalog.Origin{}, err
	}
	c, origin, err := catalog.Open(f.file)
	if err != nil {
		return at, nil, origin, fail(err)
	}
	if origin.Warning != "" {
		fmt.Fprintln(g.stderr, "rack: warning:", origin.Warning)
	}
	return at, c, origin, nil
}

// versionsReport is `rack versions -o json`.
type versionsReport struct {
	At        string           `json:"at"`
	Catalog   string           `json:"catalog"`
	Generated string           `json:"generated"`
	Channels  catalog.Channels `json:"channels"`
	Minors    []versionsMinor  `json:"minors"`
	Refreshed *refreshedReport `json:"refreshed,omitempty"`
}

type versionsMinor struct {
	Minor       string   `json:"minor"`
	Released    string   `json:"released"`
	EOL         string   `json:"eol"`
	Supported   bool     `json:"supported"`
	DaysLeft    int      `json:"daysLeft"`
	NewestPatch string   `json:"newestPatch"`
	Channels    []string `json:"channels"`
	Patches     []string `json:"patches"`
}

type refreshedReport struct {
	From  string   `json:"from"`
	Cache string   `json:"cache"`
	Added []string `json:"added"`
}

func newVersionsCmd(g *globals) *cobra.Command {
	var cf catalogFlags
	var refresh bool
	var server string
	cmd := &cobra.Command{
		Use:   "versions",
		Short: "Show the k3s version catalog and the support window at --at (default today)",
		Long: `Lists every Kubernetes minor rack knows: its upstream release and end of life,
whether it is supported at --at (released <= date < end of life), the days it
has left, its newest k3s release and the k3s channels that point at it.

--refresh asks the k3s channel server for new releases and keeps them in
rack's cache (~/.cache/rack/catalog.yaml); without network it says so and
keeps the cache as it was.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			at, c, origin, err := cf.read(g)
			if err != nil {
				return err
			}
			var refreshed *refreshedReport
			if refresh {
				ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
				defer cancel()
				path, err := catalog.CachePath()
				if err != nil {
					return fail(err)
				}
				nc, added, err := catalog.Refresh(ctx, catalog.RefreshOptions{Base: c, URL: server, CachePath: path, At: catalog.Today()})
				if err != nil {
					return fail(err)
				}
				c = nc
				origin.Description += " + refreshed just now"
				refreshed = &refreshedReport{From: server, Cache: path, Added: []string{}}
				for _, v := range added {
					refreshed.Added = append(refreshed.Added, v.String())
				}
			}
			report := buildVersionsReport(c, origin, at)
			report.Refreshed = refreshed
			if g.output == outputJSON {
				return fail(writeJSON(g.stdout, report))
			}
			return fail(writeVersionsText(g.stdout, report))
		},
	}
	cf.register(cmd)
	cmd.Flags().BoolVar(&refresh, "refresh", false, "fetch new releases from the k3s channel server and cache them")
	cmd.Flags().StringVar(&server, "channel-server", catalog.ChannelServer, "the k3s channel server --refresh asks")
	_ = cmd.Flags().MarkHidden("channel-server")
	return cmd
}

func buildVersionsReport(c *catalog.Catalog, origin catalog.Origin, at catalog.Date) versionsReport {
	r := versionsReport{At: at.String(), Catalog: origin.Description, Generated: c.Generated.String(), Channels: c.Channels, Minors: []versionsMinor{}}
	for _, m := range c.Minors {
		vm := versionsMinor{Minor: m.Minor, Released: m.Released.String(), EOL: m.EOL.String(), Supported: m.SupportedAt(at),
			DaysLeft: m.DaysLeft(at), Channels: []string{}, Patches: []string{}}
		if p, ok := m.Newest(); ok {
			vm.NewestPatch = p.String()
		}
		for _, p := range m.Patches {
			vm.Patches = append(vm.Patches, p.String())
		}
		if !c.Channels.Stable.IsZero() && c.Channels.Stable.Minor() == m.Minor {
			vm.Channels = append(vm.Channels, "stable "+c.Channels.Stable.String())
		}
		if !c.Channels.Latest.IsZero() && c.Channels.Latest.Minor() == m.Minor {
			vm.Channels = append(vm.Channels, "latest "+c.Channels.Latest.String())
		}
		r.Minors = append(r.Minors, vm)
	}
	return r
}

func writeVersionsText(w io.Writer, r versionsReport) error {
	fmt.Fprintf(w, "k3s version catalog: %s; support window at %s\n", r.Catalog, r.At)
	if r.Refreshed != nil {
		if len(r.Refreshed.Added) == 0 {
			fmt.Fprintf(w, "refreshed from %s: no new releases (cache %s)\n", r.Refreshed.From, r.Refreshed.Cache)
		} else {
			fmt.Fprintf(w, "refreshed from %s: new %s (cache %s)\n", r.Refreshed.From, strings.Join(r.Refreshed.Added, ", "), r.Refreshed.Cache)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MINOR\tRELEASED\tEOL\tSUPPORTED\tDAYS LEFT\tNEWEST PATCH\tCHANNELS")
	for _, m := range r.Minors {
		supported, days := "no", "-"
		if m.Supported {
			supported, days = "yes", fmt.Sprint(m.DaysLeft)
			if m.DaysLeft < catalog.WarnDays {
				supported = "yes (ends soon)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Minor, dash(m.Released), dash(m.EOL), supported, days, dash(m.NewestPatch), dash(strings.Join(m.Channels, ", ")))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
