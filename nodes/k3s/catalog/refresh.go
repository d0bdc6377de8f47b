package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/homelab/rack/inventory"
)

// ChannelServer is the k3s channel server: JSON
// {"data": [{"id": "stable", "name": "stable", "latest": "v1.33.5+k3s1"}, ...]},
// one entry per channel (stable, latest, testing, and one per minor, "v1.33").
const ChannelServer = "https://update.k3s.io/v1-release/channels"

// CachePath is where a refreshed catalog is kept: <user cache>/rack/catalog.yaml.
func CachePath() (string, error) {
	return inventory.UserCache("catalog.yaml", "the version catalog")
}

// Origin says where a catalog came from, for people reading rack's output.
type Origin struct {
	Description string // e.g. "embedded (generated 2026-12-02)"
	Warning     string // a cache that could not be read, and what to do
}

// Open is the catalog a command uses: the file named by --catalog when given;
// else the embedded catalog merged with the refresh cache when there is one.
// A broken cache is set aside with a warning, never fatal.
func Open(file string) (*Catalog, Origin, error) {
	if file != "" {
		c, err := Load(file)
		if err != nil {
			return nil, Origin{}, err
		}
		return c, Origin{Description: fmt.Sprintf("%s (generated %s)", file, c.Generated)}, nil
	}
	c := Embedded()
	o := Origin{Description: fmt.Sprintf("embedded (generated %s)", c.Generated)}
	path, err := CachePath()
	if err != nil {
		return c, o, nil
	}
	if _, err := os.Stat(path); err != nil {
		return c, o, nil // never refreshed
	}
	cached, err := Load(path)
	if err != nil {
		o.Warning = fmt.Sprintf("ignoring the refreshed catalog: %v", err)
		return c, o, nil
	}
	merged := Merge(c, cached)
	o.Description = fmt.Sprintf("embedded (generated %s) + refreshed %s (%s)", c.Generated, path, cached.Generated)
	return merged, o, nil
}

// Merge is the union of two catalogs: every minor and release of both, dates
// and removed APIs from a when it has them, channels from the one generated
// later (b on a tie: b is the refresh of a catalog like a).
func Merge(a, b *Catalog) *Catalog {
	out := a.clone()
	for _, mb := range b.Minors {
		ma, ok := out.Lookup(mb.Minor)
		if !ok {
			out.Minors = append(out.Minors, mb)
			out.Minors[len(out.Minors)-1].Patches = slices.Clone(mb.Patches)
			continue
		}
		ma.Patches = append(ma.Patches, mb.Patches...)
		if !ma.KnownDates() && mb.KnownDates() {
			ma.Released, ma.EOL = mb.Released, mb.EOL
		}
		if len(ma.RemovedAPIs) == 0 {
			ma.RemovedAPIs = slices.Clone(mb.RemovedAPIs)
		}
	}
	if !b.Generated.Before(a.Generated) {
		out.Generated = b.Generated
		if !b.Channels.Stable.IsZero() {
			out.Channels.Stable = b.Channels.Stable
		}
		if !b.Channels.Latest.IsZero() {
			out.Channels.Latest = b.Channels.Latest
		}
	}
	out.normalize()
	return out
}

// ChannelEntry is one channel as the channel server reports it.
type ChannelEntry struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Latest string `json:"latest"`
}

// FetchChannels asks the channel server for every channel's latest release.
func FetchChannels(ctx context.Context, client *http.Client, url string) ([]ChannelEntry, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the k3s channel server %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the k3s channel server %s answered %s", url, resp.Status)
	}
	var body struct {
		Data []ChannelEntry `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&body); err != nil {
		return nil, fmt.Errorf("the k3s channel server %s sent something that is not its channel list: %w", url, err)
	}
	if len(body.Data) == 0 {
		return nil, fmt.Errorf("the k3s channel server %s listed no channels", url)
	}
	return body.Data, nil
}

// WithChannels is c with what the channel server reports merged in: each
// channel's release added to its minor (a minor rack has no dates for is added
// without them, so it is never counted as supported), and the stable and
// latest channels replaced. Release candidates (the testing channels) are
// skipped. It returns the releases that were new to c.
func WithChannels(c *Catalog, entries []ChannelEntry, at Date) (*Catalog, []inventory.K3sVersion) {
	out := c.clone()
	var added []inventory.K3sVersion
	for _, e := range entries {
		v, err := inventory.ParseK3sVersion(e.Latest)
		if err != nil {
			continue // a release candidate or an unknown form: not a release
		}
		if !out.Contains(v) {
			added = append(added, v)
			if m, ok := out.Lookup(v.Minor()); ok {
				m.Patches = append(m.Patches, v)
				out.normalize()
			} else {
				out.Minors = append(out.Minors, Minor{Minor: v.Minor(), Patches: []inventory.K3sVersion{v}})
				out.normalize()
			}
		}
		name := e.ID
		if name == "" {
			name = e.Name
		}
		switch name {
		case "stable":
			out.Channels.Stable = v
		case "latest":
			out.Channels.Latest = v
		}
	}
	if at.After(out.Generated) {
		out.Generated = at
	}
	slices.SortFunc(added, inventory.K3sVersion.Compare)
	return out, added
}

// RefreshOptions say where to refresh from and where to keep the result.
type RefreshOptions struct {
	Base      *Catalog     // the catalog to merge into (Open's)
	URL       string       // default ChannelServer
	Client    *http.Client // default: a client with a 30s timeout
	CachePath string       // default CachePath()
	At        Date         // the refresh date, recorded as generated
}

// Refresh fetches the k3s channels, merges them into Base and writes the
// result to the cache atomically. When the server cannot be reached the
// cache is left exactly as it was, and the error says so.
func Refresh(ctx context.Context, o RefreshOptions) (*Catalog, []inventory.K3sVersion, error) {
	if o.URL == "" {
		o.URL = ChannelServer
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 30 * time.Second}
	}
	if o.CachePath == "" {
		p, err := CachePath()
		if err != nil {
			return nil, nil, err
		}
		o.CachePath = p
	}
	if o.At.IsZero() {
		o.At = Today()
	}
	entries, err := FetchChannels(ctx, o.Client, o.URL)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: the catalog was not refreshed and %s is unchanged; rack goes on with the catalog it has (check the network, or pass --catalog FILE)", err, o.CachePath)
	}
	c, added := WithChannels(o.Base, entries, o.At)
	data := Format(c, "rack's k3s version catalog, refreshed from "+o.URL+" on "+o.At.String()+".",
		"rack merges it with its embedded catalog; delete this file to forget the refresh.")
	if _, err := Parse(o.CachePath, data); err != nil {
		return nil, nil, fmt.Errorf("refreshed catalog does not check out, not saved: %w", err)
	}
	if err := writeFileAtomic(o.CachePath, data); err != nil {
		return nil, nil, fmt.Errorf("save the refreshed catalog: %w", err)
	}
	return c, added, nil
}

// writeFileAtomic replaces path with data through a temporary file in the
// same folder, so a reader never sees half a catalog.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".catalog-*.yaml")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err = f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
