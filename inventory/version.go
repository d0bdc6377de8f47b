package inventory

import (
	"fmt"
	"regexp"
	"strconv"

	version "github.com/hashicorp/go-version"
)

// This file is the one owner of k3s version parsing: every package that reads,
// orders or compares k3s versions goes through it.

var (
	// No leading zeros and at most 9 digits a number, so String gives back
	// exactly what was parsed and no number overflows.
	k3sReleaseRE = regexp.MustCompile(`^v(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\+k3s([1-9][0-9]{0,8})$`)
	k3sMinorRE   = regexp.MustCompile(`^v?(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})$`)
)

// K3sVersion is one k3s release, vMAJOR.MINOR.PATCH+k3sN. The zero value is
// no version (IsZero).
type K3sVersion struct {
	core *version.Version // MAJOR.MINOR.PATCH, ordered by go-version
	rev  int              // N of +k3sN
}

// ParseK3sVersion reads an exact k3s release such as v1.33.5+k3s1.
func ParseK3sVersion(s string) (K3sVersion, error) {
	m := k3sReleaseRE.FindStringSubmatch(s)
	if m == nil {
		return K3sVersion{}, fmt.Errorf("%q is not a k3s version: write it as vX.Y.Z+k3sN, e.g. v1.33.5+k3s1", s)
	}
	core, err := version.NewVersion(m[1] + "." + m[2] + "." + m[3])
	if err != nil { // unreachable: the regexp admits only what go-version reads
		return K3sVersion{}, fmt.Errorf("%q: %w", s, err)
	}
	rev, _ := strconv.Atoi(m[4])
	return K3sVersion{core: core, rev: rev}, nil
}

// MustK3sVersion is ParseK3sVersion for constants and tests; it panics on a
// malformed version.
func MustK3sVersion(s string) K3sVersion {
	v, err := ParseK3sVersion(s)
	if err != nil {
		panic(err)
	}
	return v
}

// IsK3sRelease reports whether s is an exact k3s release (v1.33.5+k3s1).
func IsK3sRelease(s string) bool { return k3sReleaseRE.MatchString(s) }

// IsK3sMinor reports whether s is a minor as the inventory writes it (v1.33).
func IsK3sMinor(s string) bool { return len(s) > 0 && s[0] == 'v' && k3sMinorRE.MatchString(s) }

// IsZero reports whether v holds no version.
func (v K3sVersion) IsZero() bool { return v.core == nil }

// String is the canonical form, v1.33.5+k3s1; "" for the zero value.
func (v K3sVersion) String() string {
	if v.core == nil {
		return ""
	}
	return fmt.Sprintf("v%s+k3s%d", v.core.String(), v.rev)
}

// MarshalText lets a K3sVersion be a JSON or YAML string.
func (v K3sVersion) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText reads the canonical form.
func (v *K3sVersion) UnmarshalText(b []byte) error {
	p, err := ParseK3sVersion(string(b))
	if err != nil {
		return err
	}
	*v = p
	return nil
}

func (v K3sVersion) segments() [3]int {
	if v.core == nil {
		return [3]int{}
	}
	s := v.core.Segments()
	return [3]int{s[0], s[1], s[2]}
}

// Major is X of vX.Y.Z+k3sN.
func (v K3sVersion) Major() int { return v.segments()[0] }

// MinorNumber is Y of vX.Y.Z+k3sN.
func (v K3sVersion) MinorNumber() int { return v.segments()[1] }

// Patch is Z of vX.Y.Z+k3sN.
func (v K3sVersion) Patch() int { return v.segments()[2] }

// K3sRevision is N of +k3sN: k3s' own rebuilds of one Kubernetes patch.
func (v K3sVersion) K3sRevision() int { return v.rev }

// Minor is the release's minor as the catalog writes it: "1.33".
func (v K3sVersion) Minor() string { return v.MinorVersion().String() }

// MinorVersion is the release's minor.
func (v K3sVersion) MinorVersion() K3sMinor {
	s := v.segments()
	return K3sMinor{Major: s[0], Minor: s[1]}
}

// Compare orders k3s releases: -1 when v is older than o, 0 when equal, +1 when
// newer. MAJOR.MINOR.PATCH is ordered by go-version; it ignores build
// metadata, which is where k3s keeps +k3sN, so N breaks the tie. The zero
// value is older than any version.
func (v K3sVersion) Compare(o K3sVersion) int {
	switch {
	case v.core == nil && o.core == nil:
		return 0
	case v.core == nil:
		return -1
	case o.core == nil:
		return 1
	}
	if c := v.core.Compare(o.core); c != 0 {
		return c
	}
	switch {
	case v.rev < o.rev:
		return -1
	case v.rev > o.rev:
		return 1
	}
	return 0
}

// Less reports whether v is older than o.
func (v K3sVersion) Less(o K3sVersion) bool { return v.Compare(o) < 0 }

// Equal reports whether v and o are the same release.
func (v K3sVersion) Equal(o K3sVersion) bool { return v.Compare(o) == 0 }

// K3sMinor is a Kubernetes minor, the unit of the support window and of
// upgrade steps.
type K3sMinor struct {
	Major int
	Minor int
}

// ParseMinor reads a minor written v1.33 (the inventory) or 1.33 (the catalog).
func ParseMinor(s string) (K3sMinor, error) {
	m := k3sMinorRE.FindStringSubmatch(s)
	if m == nil {
		return K3sMinor{}, fmt.Errorf("%q is not a Kubernetes minor: write it as v1.33", s)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return K3sMinor{Major: major, Minor: minor}, nil
}

// String is the catalog's form, "1.33".
func (m K3sMinor) String() string { return fmt.Sprintf("%d.%d", m.Major, m.Minor) }

// Tag is the inventory's form, "v1.33".
func (m K3sMinor) Tag() string { return "v" + m.String() }

// Compare orders minors like K3sVersion.Compare.
func (m K3sMinor) Compare(o K3sMinor) int {
	switch {
	case m.Major != o.Major:
		return cmpInt(m.Major, o.Major)
	default:
		return cmpInt(m.Minor, o.Minor)
	}
}

// Next is the minor after m (same major: Kubernetes has no 2.0 plan).
func (m K3sMinor) Next() K3sMinor { return K3sMinor{Major: m.Major, Minor: m.Minor + 1} }

// MinorGap is how many minors b is ahead of a (negative when behind). A
// change of major counts as 1000 minors, so it is never mistaken for the
// one-minor step Kubernetes allows.
func MinorGap(a, b K3sVersion) int {
	return MinorDistance(a.MinorVersion(), b.MinorVersion())
}

// MinorDistance is MinorGap for minors.
func MinorDistance(a, b K3sMinor) int {
	return (b.Major-a.Major)*1000 + b.Minor - a.Minor
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
