package inventory

import (
	"encoding/json"
	"slices"
	"testing"

	version "github.com/hashicorp/go-version"
)

func TestParseK3sVersion(t *testing.T) {
	for _, tc := range []struct {
		in                      string
		ok                      bool
		major, minor, patch, n  int
		minorString, minorTagIn string
	}{
		{in: "v1.33.5+k3s1", ok: true, major: 1, minor: 33, patch: 5, n: 1, minorString: "1.33"},
		{in: "v1.35.0+k3s3", ok: true, major: 1, minor: 35, patch: 0, n: 3, minorString: "1.35"},
		{in: "v1.30.14+k3s2", ok: true, major: 1, minor: 30, patch: 14, n: 2, minorString: "1.30"},
		{in: "v0.0.0+k3s1", ok: true, major: 0, minor: 0, patch: 0, n: 1, minorString: "0.0"},
		{in: "v1.33.5"},               // no +k3sN
		{in: "1.33.5+k3s1"},           // no v
		{in: "v1.33.5-rc1+k3s1"},      // pre-release
		{in: "v1.33.10-k3s1"},         // a dash where the + goes (a real, stray tag)
		{in: "v1.33.5+k3s0"},          // k3s revisions start at 1
		{in: "v1.033.5+k3s1"},         // leading zero would not round-trip
		{in: "v1.33.5+k3s01"},         // likewise
		{in: "v1.33+k3s1"},            // no patch
		{in: "v1.33"},                 // a minor is not a release
		{in: "v1.33.5+k3s1 "},         // trailing space
		{in: "v1.33.5+rke2r1"},        // another distribution
		{in: "v1.33.5+k3s1234567890"}, // overflow guard
		{in: ""},
	} {
		v, err := ParseK3sVersion(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseK3sVersion(%q): err %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if IsK3sRelease(tc.in) != tc.ok {
			t.Errorf("IsK3sRelease(%q) = %v", tc.in, !tc.ok)
		}
		if !tc.ok {
			if !v.IsZero() {
				t.Errorf("ParseK3sVersion(%q) failed but returned %v", tc.in, v)
			}
			continue
		}
		if v.String() != tc.in || v.Major() != tc.major || v.MinorNumber() != tc.minor || v.Patch() != tc.patch ||
			v.K3sRevision() != tc.n || v.Minor() != tc.minorString {
			t.Errorf("ParseK3sVersion(%q) = %s major %d minor %d patch %d n %d minor %q", tc.in, v, v.Major(), v.MinorNumber(), v.Patch(), v.K3sRevision(), v.Minor())
		}
	}
}

func TestParseMinor(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want K3sMinor
		ok   bool
		tag  bool // IsK3sMinor: the inventory's form needs the v
	}{
		{"v1.33", K3sMinor{1, 33}, true, true},
		{"1.33", K3sMinor{1, 33}, true, false},
		{"v1.9", K3sMinor{1, 9}, true, true},
		{"v1.33.5", K3sMinor{}, false, false},
		{"v1.033", K3sMinor{}, false, false},
		{"v1", K3sMinor{}, false, false},
		{"vv1.33", K3sMinor{}, false, false},
		{"", K3sMinor{}, false, false},
	} {
		got, err := ParseMinor(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseMinor(%q) = %v, %v", tc.in, got, err)
		}
		if IsK3sMinor(tc.in) != tc.tag {
			t.Errorf("IsK3sMinor(%q) = %v", tc.in, !tc.tag)
		}
		if tc.ok && (got.String() != tc.want.String() || got.Tag() != "v"+tc.want.String()) {
			t.Errorf("ParseMinor(%q): String %q Tag %q", tc.in, got.String(), got.Tag())
		}
	}
}

func TestCompare(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"v1.33.5+k3s1", "v1.33.5+k3s2", -1}, // the +k3sN tie-break
		{"v1.33.5+k3s2", "v1.33.5+k3s1", 1},
		{"v1.33.5+k3s10", "v1.33.5+k3s9", 1}, // numbers, not strings
		{"v1.33.5+k3s1", "v1.33.5+k3s1", 0},
		{"v1.33.10+k3s1", "v1.33.9+k3s3", 1}, // patch beats revision
		{"v1.33.9+k3s1", "v1.34.0+k3s1", -1},
		{"v1.9.0+k3s1", "v1.10.0+k3s1", -1}, // numeric minor, not lexical
		{"v2.0.0+k3s1", "v1.99.99+k3s9", 1},
	} {
		a, b := MustK3sVersion(tc.a), MustK3sVersion(tc.b)
		if got := a.Compare(b); got != tc.want {
			t.Errorf("%s vs %s: %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := b.Compare(a); got != -tc.want {
			t.Errorf("%s vs %s: %d, want %d (antisymmetry)", tc.b, tc.a, got, -tc.want)
		}
		if a.Less(b) != (tc.want < 0) || a.Equal(b) != (tc.want == 0) {
			t.Errorf("%s vs %s: Less/Equal disagree with Compare", tc.a, tc.b)
		}
	}
	if z := (K3sVersion{}); z.Compare(MustK3sVersion("v0.0.0+k3s1")) != -1 || z.Compare(K3sVersion{}) != 0 || z.String() != "" {
		t.Error("the zero version must be older than every version and print empty")
	}
}

// go-version alone ignores build metadata, so it cannot order k3s rebuilds:
// this is why Compare breaks the tie itself.
func TestGoVersionIgnoresK3sRevision(t *testing.T) {
	a := version.Must(version.NewVersion("v1.33.5+k3s1"))
	b := version.Must(version.NewVersion("v1.33.5+k3s2"))
	if a.Compare(b) != 0 {
		t.Fatalf("go-version orders %s and %s (%d): the tie-break may be obsolete", a, b, a.Compare(b))
	}
	if !MustK3sVersion("v1.33.5+k3s1").Less(MustK3sVersion("v1.33.5+k3s2")) {
		t.Fatal("v1.33.5+k3s1 must be older than v1.33.5+k3s2")
	}
}

func TestSortAndJSON(t *testing.T) {
	in := []string{"v1.34.1+k3s1", "v1.33.5+k3s2", "v1.33.10+k3s1", "v1.33.5+k3s1", "v1.9.3+k3s1"}
	vs := make([]K3sVersion, len(in))
	for i, s := range in {
		vs[i] = MustK3sVersion(s)
	}
	slices.SortFunc(vs, K3sVersion.Compare)
	var got []string
	for _, v := range vs {
		got = append(got, v.String())
	}
	want := []string{"v1.9.3+k3s1", "v1.33.5+k3s1", "v1.33.5+k3s2", "v1.33.10+k3s1", "v1.34.1+k3s1"}
	if !slices.Equal(got, want) {
		t.Fatalf("sorted %v, want %v", got, want)
	}
	data, err := json.Marshal(struct{ V K3sVersion }{vs[2]})
	if err != nil || string(data) != `{"V":"v1.33.5+k3s2"}` {
		t.Fatalf("json %s %v", data, err)
	}
	var back struct{ V K3sVersion }
	if err := json.Unmarshal(data, &back); err != nil || !back.V.Equal(vs[2]) {
		t.Fatalf("json round trip: %v %v", back.V, err)
	}
	if err := json.Unmarshal([]byte(`{"V":"v1.33"}`), &back); err == nil {
		t.Fatal("a minor must not decode as a release")
	}
}

func TestMinorGap(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"v1.31.4+k3s1", "v1.34.2+k3s1", 3},
		{"v1.33.5+k3s1", "v1.33.9+k3s1", 0},
		{"v1.34.2+k3s1", "v1.33.5+k3s1", -1},
		{"v1.33.5+k3s1", "v2.0.0+k3s1", 1000 - 33},
	} {
		if got := MinorGap(MustK3sVersion(tc.a), MustK3sVersion(tc.b)); got != tc.want {
			t.Errorf("MinorGap(%s, %s) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
	m := MustK3sVersion("v1.33.5+k3s1").MinorVersion()
	if m.Next().String() != "1.34" || m.Compare(K3sMinor{1, 34}) != -1 || m.Compare(K3sMinor{1, 33}) != 0 || (K3sMinor{2, 0}).Compare(m) != 1 {
		t.Errorf("minor ordering broken: %v", m)
	}
}

func FuzzParseK3sVersion(f *testing.F) {
	for _, s := range []string{"v1.33.5+k3s1", "v1.35.0+k3s3", "v1.33.10-k3s1", "v1.33", "v0.0.0+k3s1", "v1.2.3-rc1+k3s1", "v999999999.0.0+k3s999999999"} {
		f.Add(s, "v1.33.5+k3s2")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		va, errA := ParseK3sVersion(a)
		if IsK3sRelease(a) != (errA == nil) {
			t.Fatalf("IsK3sRelease(%q) disagrees with ParseK3sVersion (%v)", a, errA)
		}
		if errA != nil {
			return
		}
		// What parses prints back exactly, and reparses to the same release.
		if va.String() != a {
			t.Fatalf("ParseK3sVersion(%q).String() = %q", a, va.String())
		}
		if again := MustK3sVersion(va.String()); !again.Equal(va) {
			t.Fatalf("%q does not reparse to itself", a)
		}
		if _, err := ParseMinor(va.Minor()); err != nil {
			t.Fatalf("minor %q of %q does not parse: %v", va.Minor(), a, err)
		}
		vb, err := ParseK3sVersion(b)
		if err != nil {
			return
		}
		if va.Compare(vb) != -vb.Compare(va) {
			t.Fatalf("Compare(%q, %q) is not antisymmetric", a, b)
		}
		if (va.Compare(vb) == 0) != (a == b) {
			t.Fatalf("Compare(%q, %q) = 0 must mean the same string", a, b)
		}
	})
}
