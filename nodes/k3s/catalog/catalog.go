// Package catalog is rack's knowledge of k3s releases: every release of the
// minors rack cares about, each minor's upstream release and end-of-life dates,
// the k3s channels, and the APIs each minor removed. The catalog is embedded
// at build time (catalog.yaml, generated from sources.yaml), refreshed from the
// k3s channel server into a cache, or read from a file (--catalog).
//
// Everything here but the refresh is pure: answers depend on the catalog and
// the date passed in, never on the clock.
package catalog

//go:generate go run ./gen

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/homelab/rack/inventory"
)

// EmbeddedFile is the catalog file compiled into rack, relative to this package.
const EmbeddedFile = "catalog.yaml"

//go:embed catalog.yaml
var embedded []byte

// Catalog is the SPEC's catalog format.
type Catalog struct {
	Generated Date     `yaml:"generated" json:"generated"`
	Channels  Channels `yaml:"channels" json:"channels"`
	Minors    []Minor  `yaml:"minors" json:"minors"` // newest first
}

// Channels are the k3s release channels rack follows.
type Channels struct {
	Stable inventory.K3sVersion `yaml:"stable,omitempty" json:"stable"`
	Latest inventory.K3sVersion `yaml:"latest,omitempty" json:"latest"`
}

// Minor is one Kubernetes minor and its k3s releases.
type Minor struct {
	Minor       string                 `yaml:"minor" json:"minor"`       // "1.33"
	Released    Date                   `yaml:"released" json:"released"` // upstream release; zero when unknown
	EOL         Date                   `yaml:"eol" json:"eol"`           // upstream end of life; zero when unknown
	Patches     []inventory.K3sVersion `yaml:"patches" json:"patches"`   // oldest first
	RemovedAPIs []RemovedAPI           `yaml:"removedAPIs,omitempty" json:"removedAPIs,omitempty"`
}

// RemovedAPI is an API version this minor no longer serves.
type RemovedAPI struct {
	Group       string `yaml:"group" json:"group"` // "" is the core group
	Version     string `yaml:"version" json:"version"`
	Kind        string `yaml:"kind" json:"kind"`
	Replacement string `yaml:"replacement,omitempty" json:"replacement,omitempty"` // group/version; "" when there is none
}

// GroupVersion is the apiVersion objects of the removed API were written with.
func (r RemovedAPI) GroupVersion() string {
	if r.Group == "" {
		return r.Version
	}
	return r.Group + "/" + r.Version
}

var (
	embeddedOnce sync.Once
	embeddedCat  *Catalog
	embeddedErr  error
)

// Embedded is the catalog compiled into rack. It panics when that file is
// broken, which the package's tests rule out before a build ships.
func Embedded() *Catalog {
	embeddedOnce.Do(func() { embeddedCat, embeddedErr = Parse(EmbeddedFile, embedded) })
	if embeddedErr != nil {
		panic(embeddedErr)
	}
	return embeddedCat.clone()
}

// Load reads a catalog file (--catalog FILE, or the refresh cache).
func Load(path string) (*Catalog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("catalog %s does not exist: check --catalog, or leave it out to use rack's own", path)
		}
		return nil, fmt.Errorf("read catalog %s: %w", path, err)
	}
	return Parse(path, data)
}

// Parse reads and checks a catalog; name says where it came from in errors.
func Parse(name string, data []byte) (*Catalog, error) {
	var c Catalog
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("catalog %s is not a valid catalog: %w (fix the file, or run rack versions --refresh to rewrite the cache)", name, err)
	}
	c.normalize()
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("catalog %s: %w", name, err)
	}
	return &c, nil
}

// normalize orders minors newest first and patches oldest first, dropping
// duplicates, so every reader sees the same order whatever the file had.
func (c *Catalog) normalize() {
	slices.SortStableFunc(c.Minors, func(a, b Minor) int {
		ma, errA := inventory.ParseMinor(a.Minor)
		mb, errB := inventory.ParseMinor(b.Minor)
		if errA != nil || errB != nil {
			return strings.Compare(b.Minor, a.Minor)
		}
		return mb.Compare(ma)
	})
	for i := range c.Minors {
		m := &c.Minors[i]
		slices.SortFunc(m.Patches, inventory.K3sVersion.Compare)
		m.Patches = slices.CompactFunc(m.Patches, inventory.K3sVersion.Equal)
		if m.Patches == nil {
			m.Patches = []inventory.K3sVersion{}
		}
	}
}

func (c *Catalog) check() error {
	var errs []error
	seen := map[string]bool{}
	for _, m := range c.Minors {
		mv, err := inventory.ParseMinor(m.Minor)
		if err != nil || strings.HasPrefix(m.Minor, "v") {
			errs = append(errs, fmt.Errorf("minor %q: write minors as \"1.33\"", m.Minor))
			continue
		}
		if seen[m.Minor] {
			errs = append(errs, fmt.Errorf("minor %s is listed twice: merge the two entries", m.Minor))
		}
		seen[m.Minor] = true
		if m.Released.IsZero() != m.EOL.IsZero() {
			errs = append(errs, fmt.Errorf("minor %s: give both released and eol, or neither", m.Minor))
		}
		if !m.Released.IsZero() && !m.Released.Before(m.EOL) {
			errs = append(errs, fmt.Errorf("minor %s: eol %s is not after released %s", m.Minor, m.EOL, m.Released))
		}
		for _, p := range m.Patches {
			if p.MinorVersion() != mv {
				errs = append(errs, fmt.Errorf("minor %s lists %s, a release of %s: move it", m.Minor, p, p.Minor()))
			}
		}
		for _, r := range m.RemovedAPIs {
			if r.Version == "" || r.Kind == "" {
				errs = append(errs, fmt.Errorf("minor %s: a removed API needs a version and a kind", m.Minor))
			}
		}
	}
	for name, v := range map[string]inventory.K3sVersion{"stable": c.Channels.Stable, "latest": c.Channels.Latest} {
		if !v.IsZero() && !c.Contains(v) {
			errs = append(errs, fmt.Errorf("channel %s is %s, which no minor lists: add it to its minor's patches", name, v))
		}
	}
	return errors.Join(errs...)
}

func (c *Catalog) clone() *Catalog {
	out := *c
	out.Minors = make([]Minor, len(c.Minors))
	for i, m := range c.Minors {
		m.Patches = slices.Clone(m.Patches)
		m.RemovedAPIs = slices.Clone(m.RemovedAPIs)
		out.Minors[i] = m
	}
	return &out
}

// Lookup finds a minor written "1.33" or "v1.33".
func (c *Catalog) Lookup(minor string) (*Minor, bool) {
	want, err := inventory.ParseMinor(minor)
	if err != nil {
		return nil, false
	}
	for i := range c.Minors {
		if c.Minors[i].Minor == want.String() {
			return &c.Minors[i], true
		}
	}
	return nil, false
}

// Newest is the minor's newest release.
func (m *Minor) Newest() (inventory.K3sVersion, bool) {
	if len(m.Patches) == 0 {
		return inventory.K3sVersion{}, false
	}
	return m.Patches[len(m.Patches)-1], true
}

// KnownDates reports whether the minor's release and end-of-life dates are
// known (a minor first seen on the channel server has none).
func (m *Minor) KnownDates() bool { return !m.Released.IsZero() && !m.EOL.IsZero() }

// SupportedAt reports whether the minor is in the support window at d:
// released <= d < eol. A minor without dates is never supported.
func (m *Minor) SupportedAt(d Date) bool {
	return m.KnownDates() && !d.Before(m.Released) && d.Before(m.EOL)
}

// DaysLeft is how many days the minor has until its end of life at d; 0 once
// past it or when the date is unknown.
func (m *Minor) DaysLeft(d Date) int {
	if m.EOL.IsZero() {
		return 0
	}
	return max(0, d.DaysUntil(m.EOL))
}

// SupportedAt reports whether a minor ("1.33" or "v1.33") is supported at d.
func (c *Catalog) SupportedAt(minor string, d Date) bool {
	m, ok := c.Lookup(minor)
	return ok && m.SupportedAt(d)
}

// DaysLeft is Minor.DaysLeft by name; 0 for an unknown minor.
func (c *Catalog) DaysLeft(minor string, d Date) int {
	if m, ok := c.Lookup(minor); ok {
		return m.DaysLeft(d)
	}
	return 0
}

// Window is the minors supported at d, newest first.
func (c *Catalog) Window(d Date) []Minor {
	var out []Minor
	for _, m := range c.Minors {
		if m.SupportedAt(d) {
			out = append(out, m)
		}
	}
	return out
}

// NewestPatch is the newest release of a minor ("1.33" or "v1.33").
func (c *Catalog) NewestPatch(minor string) (inventory.K3sVersion, bool) {
	m, ok := c.Lookup(minor)
	if !ok {
		return inventory.K3sVersion{}, false
	}
	return m.Newest()
}

// Contains reports whether v is a release the catalog lists.
func (c *Catalog) Contains(v inventory.K3sVersion) bool {
	m, ok := c.Lookup(v.Minor())
	if !ok {
		return false
	}
	_, found := slices.BinarySearchFunc(m.Patches, v, inventory.K3sVersion.Compare)
	return found
}

// Versions is every release the catalog lists, oldest first.
func (c *Catalog) Versions() []inventory.K3sVersion {
	var out []inventory.K3sVersion
	for i := len(c.Minors) - 1; i >= 0; i-- {
		out = append(out, c.Minors[i].Patches...)
	}
	return out
}

// Resolve turns what the inventory says (an exact release, or a minor such as
// v1.33 for its newest release) into a release the catalog lists.
func (c *Catalog) Resolve(s string) (inventory.K3sVersion, error) {
	if inventory.IsK3sMinor(s) {
		m, ok := c.Lookup(s)
		if !ok {
			return inventory.K3sVersion{}, fmt.Errorf("k3s %s is not in rack's catalog (it knows %s): pick one of those, or run rack versions --refresh", s, c.minorRange())
		}
		v, ok := m.Newest()
		if !ok {
			return inventory.K3sVersion{}, fmt.Errorf("k3s %s has no release in rack's catalog yet: run rack versions --refresh, or pin an exact version", s)
		}
		return v, nil
	}
	v, err := inventory.ParseK3sVersion(s)
	if err != nil {
		return inventory.K3sVersion{}, err
	}
	if !c.Contains(v) {
		return inventory.K3sVersion{}, fmt.Errorf("k3s %s is not in rack's catalog: rack versions lists the releases it knows (run rack versions --refresh for new ones)", v)
	}
	return v, nil
}

// minorRange is "1.25 … 1.37", for messages.
func (c *Catalog) minorRange() string {
	if len(c.Minors) == 0 {
		return "no minors"
	}
	return c.Minors[len(c.Minors)-1].Minor + " … " + c.Minors[0].Minor
}

// Date is a calendar day, the unit of the support window.
type Date struct{ t time.Time } // midnight UTC

const dateLayout = "2006-01-02"

// ParseDate reads YYYY-MM-DD.
func ParseDate(s string) (Date, error) {
	t, err := time.Parse(dateLayout, s)
	if err != nil {
		return Date{}, fmt.Errorf("%q is not a date: write it as YYYY-MM-DD, e.g. 2026-12-02", s)
	}
	return Date{t}, nil
}

// MustDate is ParseDate for constants and tests.
func MustDate(s string) Date {
	d, err := ParseDate(s)
	if err != nil {
		panic(err)
	}
	return d
}

// DateOf is the calendar day of t where t is (its location).
func DateOf(t time.Time) Date {
	y, m, d := t.Date()
	return Date{time.Date(y, m, d, 0, 0, 0, 0, time.UTC)}
}

// Today is the local calendar day.
func Today() Date { return DateOf(time.Now()) }

// IsZero reports an unknown date.
func (d Date) IsZero() bool { return d.t.IsZero() }

// String is YYYY-MM-DD, "" for the zero date.
func (d Date) String() string {
	if d.IsZero() {
		return ""
	}
	return d.t.Format(dateLayout)
}

// Before reports whether d is a day before o.
func (d Date) Before(o Date) bool { return d.t.Before(o.t) }

// After reports whether d is a day after o.
func (d Date) After(o Date) bool { return d.t.After(o.t) }

// DaysUntil is how many days o is after d (negative when before).
func (d Date) DaysUntil(o Date) int { return int(o.t.Sub(d.t).Hours() / 24) }

// MarshalText writes YYYY-MM-DD.
func (d Date) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads YYYY-MM-DD; empty is the zero date.
func (d *Date) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*d = Date{}
		return nil
	}
	p, err := ParseDate(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}
