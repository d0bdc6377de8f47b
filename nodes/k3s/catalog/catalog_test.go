package catalog

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/homelab/rack/inventory"
)

// The embedded catalog is exactly what the generator makes from the sources:
// edit sources.yaml and forget `go generate`, and this fails.
func TestEmbeddedIsGenerated(t *testing.T) {
	src, err := os.ReadFile(SourcesFile)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Generate(src)
	if err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile(EmbeddedFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, want) || !bytes.Equal(embedded, want) {
		t.Fatalf("%s is stale: run go generate ./nodes/k3s/catalog", EmbeddedFile)
	}
}

func v(s string) inventory.K3sVersion { return inventory.MustK3sVersion(s) }

func TestEmbeddedFacts(t *testing.T) {
	c := Embedded()
	if c.Generated.String() != "2026-12-02" {
		t.Errorf("generated %s", c.Generated)
	}
	if c.Channels.Stable.String() != "v1.36.3+k3s1" || c.Channels.Latest.String() != "v1.37.1+k3s1" {
		t.Errorf("channels %v", c.Channels)
	}
	if got := c.Minors[len(c.Minors)-1].Minor; got != "1.25" || c.Minors[0].Minor != "1.37" {
		t.Errorf("minors %s … %s, want 1.25 … 1.37 newest first", got, c.Minors[0].Minor)
	}
	for _, s := range []string{"v1.33.5+k3s1", "v1.28.15+k3s1", "v1.35.0+k3s3", "v1.30.14+k3s2", "v1.37.1+k3s1"} {
		if !c.Contains(v(s)) {
			t.Errorf("catalog lacks %s", s)
		}
	}
	for _, s := range []string{"v1.33.5+k3s2", "v1.34.0+k3s1", "v1.38.0+k3s1"} {
		if c.Contains(v(s)) {
			t.Errorf("catalog lists %s, which k3s never released", s)
		}
	}
	all := c.Versions()
	if !slices.IsSortedFunc(all, inventory.K3sVersion.Compare) || len(all) < 180 {
		t.Errorf("%d versions, sorted %v", len(all), slices.IsSortedFunc(all, inventory.K3sVersion.Compare))
	}
	m, _ := c.Lookup("1.25")
	if len(m.RemovedAPIs) != 7 || m.RemovedAPIs[0].GroupVersion() != "batch/v1beta1" || m.RemovedAPIs[0].Replacement != "batch/v1" {
		t.Errorf("1.25 removed APIs: %+v", m.RemovedAPIs)
	}
	m, _ = c.Lookup("v1.32")
	if len(m.RemovedAPIs) != 2 || m.RemovedAPIs[0].Kind != "FlowSchema" || m.RemovedAPIs[0].Replacement != "flowcontrol.apiserver.k8s.io/v1" {
		t.Errorf("1.32 removed APIs: %+v", m.RemovedAPIs)
	}
}

func TestSupportWindow(t *testing.T) {
	c := Embedded()
	today := MustDate("2026-12-02")
	var window []string
	for _, m := range c.Window(today) {
		window = append(window, m.Minor)
	}
	if !slices.Equal(window, []string{"1.37", "1.36", "1.35"}) {
		t.Errorf("window at %s: %v", today, window)
	}
	for _, tc := range []struct {
		minor, at string
		want      bool
	}{
		{"1.34", "2026-12-02", false},     // past EOL (2026-10-27)
		{"1.35", "2026-12-02", true},      //
		{"v1.35", "2026-12-02", true},     // the inventory's spelling
		{"1.34", "2025-08-27", true},      // released <= D
		{"1.34", "2025-08-26", false},     // not yet released
		{"1.34", "2026-10-26", true},      // D < eol
		{"1.34", "2026-10-27", false},     // eol itself is out
		{"1.99", "2026-12-02", false},     // unknown
		{"nonsense", "2026-12-02", false}, //
	} {
		if got := c.SupportedAt(tc.minor, MustDate(tc.at)); got != tc.want {
			t.Errorf("SupportedAt(%s, %s) = %v", tc.minor, tc.at, got)
		}
	}
	if d := c.DaysLeft("1.35", today); d != 88 {
		t.Errorf("1.35 days left at %s: %d, want 88", today, d)
	}
	if d := c.DaysLeft("1.33", today); d != 0 {
		t.Errorf("past EOL days left %d, want 0", d)
	}
}

func TestResolve(t *testing.T) {
	c := Embedded()
	for _, tc := range []struct{ in, want, err string }{
		{in: "v1.36", want: "v1.36.5+k3s1"},
		{in: "v1.35", want: "v1.35.6+k3s1"},
		{in: "v1.33.5+k3s1", want: "v1.33.5+k3s1"},
		{in: "v1.33.5+k3s2", err: "not in rack's catalog"},
		{in: "v1.99", err: "not in rack's catalog"},
		{in: "1.36", err: "is not a k3s version"},
		{in: "latest", err: "is not a k3s version"},
	} {
		got, err := c.Resolve(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("Resolve(%q) = %v, %v; want error with %q", tc.in, got, err, tc.err)
		case tc.err == "" && (err != nil || got.String() != tc.want):
			t.Errorf("Resolve(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	if p, ok := c.NewestPatch("1.30"); !ok || p.String() != "v1.30.14+k3s2" {
		t.Errorf("newest 1.30: %v (the +k3s2 rebuild is newer than +k3s1)", p)
	}
}

func TestSupportOf(t *testing.T) {
	c := Embedded()
	for _, tc := range []struct {
		version, at string
		want        Support
		warn        string
	}{
		{"v1.35.6+k3s1", "2026-12-02", Support{Minor: "1.35", Supported: true, EOL: "2027-02-28", DaysLeft: 88}, ""},
		{"v1.35.6+k3s1", "2027-01-15", Support{Minor: "1.35", Supported: true, EOL: "2027-02-28", DaysLeft: 44}, "in 44 day(s)"},
		{"v1.35", "2027-02-27", Support{Minor: "1.35", Supported: true, EOL: "2027-02-28", DaysLeft: 1}, "in 1 day(s)"},
		{"v1.33.5+k3s1", "2026-12-02", Support{Minor: "1.33", EOL: "2026-06-28"}, "reached end of life on 2026-06-28"},
		{"v1.37.0+k3s1", "2026-01-01", Support{Minor: "1.37", EOL: "2027-10-28", DaysLeft: 665}, "not released until"},
		{"v1.38.1+k3s1", "2026-12-02", Support{Minor: "1.38"}, "not in rack's version catalog"},
	} {
		got, err := c.SupportOf(tc.version, MustDate(tc.at))
		if err != nil {
			t.Errorf("%s: %v", tc.version, err)
			continue
		}
		warn := got.Warning
		got.Warning = ""
		if got != tc.want || (tc.warn == "") != (warn == "") || !strings.Contains(warn, tc.warn) {
			t.Errorf("SupportOf(%s, %s) = %+v %q, want %+v %q", tc.version, tc.at, got, warn, tc.want, tc.warn)
		}
	}
	if _, err := c.SupportOf("v1.33.5", MustDate("2026-12-02")); err == nil {
		t.Error("an unparseable version must be an error")
	}
}

func TestParseRefusesBrokenCatalogs(t *testing.T) {
	for _, tc := range []struct{ name, text, err string }{
		{"wrong minor", "generated: 2026-01-01\nminors:\n  - {minor: \"1.33\", released: 2025-04-23, eol: 2026-06-28, patches: [v1.34.1+k3s1]}\n", "lists v1.34.1+k3s1, a release of 1.34"},
		{"channel", "generated: 2026-01-01\nchannels: {stable: v1.33.9+k3s1}\nminors:\n  - {minor: \"1.33\", released: 2025-04-23, eol: 2026-06-28, patches: [v1.33.5+k3s1]}\n", "channel stable is v1.33.9+k3s1, which no minor lists"},
		{"dates", "generated: 2026-01-01\nminors:\n  - {minor: \"1.33\", released: 2026-06-28, eol: 2025-04-23, patches: []}\n", "is not after released"},
		{"half dates", "generated: 2026-01-01\nminors:\n  - {minor: \"1.33\", released: 2026-06-28, patches: []}\n", "both released and eol"},
		{"minor form", "generated: 2026-01-01\nminors:\n  - {minor: \"v1.33\", patches: []}\n", `write minors as "1.33"`},
		{"twice", "generated: 2026-01-01\nminors:\n  - {minor: \"1.33\", patches: []}\n  - {minor: \"1.33\", patches: []}\n", "listed twice"},
		{"bad version", "generated: 2026-01-01\nminors:\n  - {minor: \"1.33\", patches: [v1.33.5]}\n", "not a k3s version"},
		{"bad date", "generated: 2026-13-01\n", "not a date"},
	} {
		_, err := Parse("test.yaml", []byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
}

func TestFormatRoundTrip(t *testing.T) {
	c := Embedded()
	again, err := Parse("again", Format(c))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(Format(again), Format(c)) {
		t.Fatal("Format does not round-trip")
	}
	odd := &Catalog{Generated: MustDate("2026-01-01"), Minors: []Minor{{Minor: "1.9", Patches: []inventory.K3sVersion{},
		RemovedAPIs: []RemovedAPI{{Group: "", Version: "v1beta1", Kind: "Event"}, {Group: "yes", Version: "v1", Kind: "Thing: odd"}}}}}
	back, err := Parse("odd", Format(odd))
	if err != nil || !slices.Equal(back.Minors[0].RemovedAPIs, odd.Minors[0].RemovedAPIs) {
		t.Fatalf("odd names do not survive formatting: %v %+v\n%s", err, back, Format(odd))
	}
}

func TestGenerateRefusesBadSources(t *testing.T) {
	base := "gathered: 2026-12-02\nkubernetes:\n  - {minor: \"1.33\", released: 2025-04-23, eol: 2026-06-28}\n"
	for _, tc := range []struct{ name, text, err string }{
		{"rc", base + "tags:\n  - [v1.33.1-rc1+k3s1]\n", "not a k3s release"},
		{"stray", base + "tags:\n  - [v1.33.10-k3s1]\n", "not a k3s release"},
		{"no dates", base + "tags:\n  - [v1.34.1+k3s1]\n", "minor 1.34, which has no kubernetes entry"},
		{"unknown key", base + "tag:\n  - [v1.33.1+k3s1]\n", "field tag not found"},
		{"removed without minor", base + "removedAPIs:\n  \"1.40\": [{group: a, version: v1, kind: B}]\n", "minor 1.40 has no kubernetes entry"},
		{"no date", "kubernetes: []\n", "gathered"},
	} {
		_, err := Generate([]byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
	out, err := Generate([]byte(base + "tags:\n  - [v1.33.2+k3s1, v1.33.1+k3s1]\n  - [v1.33.1+k3s1]\n"))
	if err != nil || !strings.Contains(string(out), "patches: [v1.33.1+k3s1, v1.33.2+k3s1]") || !strings.Contains(string(out), "latest: v1.33.2+k3s1") {
		t.Fatalf("tags are not sorted, deduplicated and the newest made latest: %v\n%s", err, out)
	}
}
