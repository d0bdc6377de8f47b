package catalog

import (
	"fmt"

	"github.com/homelab/rack/inventory"
)

// WarnDays is how close to its end of life a minor is when rack warns.
const WarnDays = 60

// Support is a cluster version's place in the support window: `rack status`
// prints it as "support". EOL is "" when the catalog does not know it.
type Support struct {
	Minor     string `json:"minor"`
	Supported bool   `json:"supported"`
	EOL       string `json:"eol"`
	DaysLeft  int    `json:"daysLeft"`
	Warning   string `json:"warning,omitempty"` // set when unsupported or under WarnDays left
}

// SupportOf is the support status at d of a version: an exact release
// (v1.33.5+k3s1) or a minor (v1.33). It errors only when the version does not
// parse; a minor the catalog does not know is unsupported, with a warning.
func (c *Catalog) SupportOf(version string, d Date) (Support, error) {
	var minor inventory.K3sMinor
	if inventory.IsK3sMinor(version) {
		m, err := inventory.ParseMinor(version)
		if err != nil {
			return Support{}, err
		}
		minor = m
	} else {
		v, err := inventory.ParseK3sVersion(version)
		if err != nil {
			return Support{}, err
		}
		minor = v.MinorVersion()
	}
	s := Support{Minor: minor.String()}
	m, ok := c.Lookup(minor.String())
	if !ok || !m.KnownDates() {
		s.Warning = fmt.Sprintf("k3s %s is not in rack's version catalog, so its support window is unknown: run rack versions --refresh, or upgrade rack", s.Minor)
		return s, nil
	}
	s.EOL = m.EOL.String()
	s.Supported = m.SupportedAt(d)
	s.DaysLeft = m.DaysLeft(d)
	switch {
	case d.Before(m.Released):
		s.Warning = fmt.Sprintf("k3s %s is not released until %s (at %s)", s.Minor, m.Released, d)
	case !s.Supported:
		s.Warning = fmt.Sprintf("k3s %s reached end of life on %s and gets no more fixes: upgrade (rack upgrade plan shows the path)", s.Minor, m.EOL)
	case s.DaysLeft < WarnDays:
		s.Warning = fmt.Sprintf("k3s %s reaches end of life on %s, in %d day(s): plan the upgrade (rack upgrade plan)", s.Minor, m.EOL, s.DaysLeft)
	}
	return s, nil
}
