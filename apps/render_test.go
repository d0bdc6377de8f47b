package apps_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/inventory"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/render/*.yaml from the renderer")

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// Objects every web state shares.
const (
	pdb     = "PodDisruptionBudget web maxUnavailable=1"
	preview = "IngressRoute web-preview: Host(`web.home.arpa`) && Header(`X-Rack-Preview`, `true`) [1001] -> Service/web-green; marker"
)

// TestRenderTable: every strategy × release state → the exact objects, one
// summary line each (full objects: TestRenderGolden).
func TestRenderTable(t *testing.T) {
	inPlace := func(k8s, image string) string {
		return `
			Service web ClusterIP -> all
			Deployment web stable ` + image + ` x4 ` + k8s + `
			` + pdb + `
			IngressRoute web: Host(` + "`web.home.arpa`" + `) -> Service/web; marker`
	}
	// stableOnly: one slot, no candidate (fresh, rolled back, promoted).
	stableOnly := func(colour, image, traffic string) string {
		return `
			Service web ClusterIP -> ` + colour + `
			Service web-` + colour + ` ClusterIP -> ` + colour + `
			Deployment web-` + colour + ` ` + image + ` x4 RollingUpdate
			` + pdb + "\n" + traffic
	}
	// both: stable in blue, candidate web:2 in green.
	both := func(traffic string) string {
		return `
			Service web ClusterIP -> blue
			Service web-blue ClusterIP -> blue
			Service web-green ClusterIP -> green
			Service web-preview ClusterIP -> green
			Deployment web-blue web:1 x4 RollingUpdate
			Deployment web-green web:2 x4 RollingUpdate
			` + pdb + "\n" + traffic + "\n" + preview
	}
	canaryAt := func(blue, green int) string {
		ts := fmt.Sprintf("TraefikService web weighted web-blue=%d web-green=%d", blue, green)
		if blue == 0 {
			ts = "TraefikService web weighted web-green=100"
		}
		return both(ts + "\nIngressRoute web: Host(`web.home.arpa`) -> TraefikService/web; marker")
	}
	route := func(to string) string { return "IngressRoute web: Host(`web.home.arpa`) -> " + to + "; marker" }
	mirror := "TraefikService web mirroring web-blue"

	tests := map[string]map[string]string{
		inventory.StrategyRecreate: {
			"fresh":    inPlace("Recreate", "web:1"),
			"deployed": inPlace("Recreate", "web:2"),
		},
		inventory.StrategyRolling: {
			"fresh":    inPlace("RollingUpdate", "web:1"),
			"deployed": inPlace("RollingUpdate", "web:2"),
		},
		inventory.StrategyBlueGreen: {
			"fresh":       stableOnly("blue", "web:1", route("Service/web-blue")),
			"candidate":   both(route("Service/web-blue")),
			"promoted":    stableOnly("green", "web:2", route("Service/web-green")),
			"rolled-back": stableOnly("blue", "web:1", route("Service/web-blue")),
		},
		inventory.StrategyCanary: {
			"fresh":       stableOnly("blue", "web:1", "TraefikService web weighted web-blue=100\n"+route("TraefikService/web")),
			"candidate":   canaryAt(95, 5),
			"step-1":      canaryAt(75, 25),
			"step-2":      canaryAt(50, 50),
			"step-3":      canaryAt(0, 100),
			"promoted":    stableOnly("green", "web:2", "TraefikService web weighted web-green=100\n"+route("TraefikService/web")),
			"rolled-back": stableOnly("blue", "web:1", "TraefikService web weighted web-blue=100\n"+route("TraefikService/web")),
		},
		inventory.StrategyAB: {
			"fresh":       stableOnly("blue", "web:1", route("Service/web-blue")),
			"candidate":   both("IngressRoute web: Host(`web.home.arpa`) && Header(`X-Variant`, `b`) [1000] -> Service/web-green; Host(`web.home.arpa`) -> Service/web-blue; marker"),
			"promoted":    stableOnly("green", "web:2", route("Service/web-green")),
			"rolled-back": stableOnly("blue", "web:1", route("Service/web-blue")),
		},
		inventory.StrategyShadow: {
			"fresh":       stableOnly("blue", "web:1", mirror+"\n"+route("TraefikService/web")),
			"candidate":   both(mirror + " mirror web-green=10%\n" + route("TraefikService/web")),
			"promoted":    stableOnly("green", "web:2", "TraefikService web mirroring web-green\n"+route("TraefikService/web")),
			"rolled-back": stableOnly("blue", "web:1", mirror+"\n"+route("TraefikService/web")),
		},
	}
	for _, typ := range inventory.Strategies {
		app := webApp(typ)
		for _, st := range states(t, app) {
			t.Run(typ+"/"+st.name, func(t *testing.T) {
				want, ok := tests[typ][st.name]
				if !ok {
					t.Fatalf("no expectation for state %s", st.name)
				}
				got := summaries(render(t, app, st.rel))
				if !slices.Equal(got, lines(want)) {
					t.Fatalf("objects\n got:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(lines(want), "\n  "))
				}
			})
		}
	}
}

// The TraefikService's weights are the ones `rack app status` reports.
func TestWeightsMatchStatus(t *testing.T) {
	app := webApp(inventory.StrategyCanary)
	for _, st := range states(t, app) {
		status, err := apps.StatusOf(app, st.rel)
		if err != nil {
			t.Fatal(err)
		}
		got := apps.Weights{}
		for _, o := range render(t, app, st.rel) {
			if o.GetKind() != "TraefikService" {
				continue
			}
			ws, _, _ := unstructuredSlice(o.Object, "spec", "weighted", "services")
			for _, w := range ws {
				m := w.(map[string]any)
				colour := strings.TrimPrefix(m["name"].(string), "web-")
				if apps.Colour(colour) == colourOf(st.rel) {
					got.Stable = int(m["weight"].(int64))
				} else {
					got.Candidate = int(m["weight"].(int64))
				}
			}
		}
		if got != status.Weights {
			t.Errorf("%s: TraefikService weights %+v, status %+v", st.name, got, status.Weights)
		}
	}
}

func colourOf(rel apps.Release) apps.Colour {
	if rel.Colour == "" {
		return apps.Blue
	}
	return rel.Colour
}

// TestRenderGolden compares the full objects of every case and state with
// testdata/render (go test ./apps -run Golden -update rewrites them).
func TestRenderGolden(t *testing.T) {
	for _, c := range renderCases() {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			for _, st := range states(t, c.app) {
				for _, o := range render(t, c.app, st.rel) {
					y, err := yaml.Marshal(o.Object)
					if err != nil {
						t.Fatal(err)
					}
					fmt.Fprintf(&buf, "---\n# %s: %s\n%s", st.name, apps.Key(o), y)
				}
			}
			file := filepath.Join("testdata", "render", c.name+".yaml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("%s differs from the renderer's output (run with -update and review the diff):\n%s", file, firstDiff(buf.String(), string(want)))
			}
		})
	}
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n got %q\nwant %q", i+1, gl, wl)
		}
	}
	return ""
}

// Rendering is pure: the same input, the same objects, whatever the map
// order of env.
func TestRenderDeterministic(t *testing.T) {
	app := postgresql()
	rel, _ := apps.Deploy(app, apps.Release{})
	first := render(t, app, rel)
	for range 20 {
		if got := render(t, app, rel); !reflect.DeepEqual(got, first) {
			t.Fatal("two renders of the same input differ")
		}
	}
	var env []string
	for _, o := range first {
		if o.GetKind() == "Deployment" {
			ctrs, _, _ := unstructuredSlice(o.Object, "spec", "template", "spec", "containers")
			for _, e := range ctrs[0].(map[string]any)["env"].([]any) {
				env = append(env, e.(map[string]any)["name"].(string))
			}
		}
	}
	if want := []string{"PGDATA", "POSTGRES_DB", "POSTGRES_USER"}; !slices.Equal(env, want) {
		t.Fatalf("env %v, want sorted %v", env, want)
	}
}

// The A/B cookie rule matches the cookie among others, and nothing like it.
func TestCookieRule(t *testing.T) {
	app := webApp(inventory.StrategyAB)
	app.Strategy.Match = &inventory.Match{Cookie: "variant", Value: "b.1"}
	rel, _ := apps.Deploy(app, apps.Release{})
	app.Image = "web:2"
	rel, _ = apps.Deploy(app, rel)
	var rule string
	for _, o := range render(t, app, rel) {
		if o.GetKind() == "IngressRoute" && o.GetName() == "web" {
			rs, _, _ := unstructuredSlice(o.Object, "spec", "routes")
			rule = rs[0].(map[string]any)["match"].(string)
		}
	}
	// Traefik compiles the second argument of HeaderRegexp with Go's regexp
	// and matches each Cookie header value.
	m := regexp.MustCompile("HeaderRegexp\\(`Cookie`, `([^`]*)`\\)").FindStringSubmatch(rule)
	if m == nil {
		t.Fatalf("no cookie matcher in %q", rule)
	}
	re := regexp.MustCompile(m[1])
	for header, want := range map[string]bool{
		"variant=b.1":                  true,
		"a=1; variant=b.1":             true,
		"a=1;variant=b.1; c=2":         true,
		"variant=b.10":                 false,
		"myvariant=b.1":                false,
		"variant=bx1":                  false,
		"a=variant=b.1":                false,
		"variant=a; other=variant=b.1": false,
	} {
		if got := re.MatchString(header); got != want {
			t.Errorf("Cookie: %s: matched %v, want %v", header, got, want)
		}
	}
}

// TestCheck: every refusal names the app and the key, and says what to do.
func TestCheck(t *testing.T) {
	edit := func(typ string, f func(*inventory.App)) inventory.App {
		a := webApp(typ)
		f(&a)
		return a
	}
	tests := []struct {
		name string
		app  inventory.App
		want []string
	}{
		{"canary without a host", edit(inventory.StrategyCanary, func(a *inventory.App) { a.Expose = &inventory.Expose{} }),
			[]string{"apps[web].expose.host: strategy canary splits requests in Traefik, so the app needs a route: set expose: {host: web.home.arpa} (and addons.traefik), or use rolling or blue-green"}},
		{"ab without expose", edit(inventory.StrategyAB, func(a *inventory.App) { a.Expose = nil }),
			[]string{"apps[web].expose.host: strategy ab splits requests in Traefik"}},
		{"shadow without mirror", edit(inventory.StrategyShadow, func(a *inventory.App) { a.Strategy.Mirror = 0 }),
			[]string{"apps[web].strategy.mirror: shadow needs mirror: the percent of requests (1-100) copied to the candidate, like mirror: 10"}},
		{"canary steps", edit(inventory.StrategyCanary, func(a *inventory.App) { a.Strategy.Steps = []int{5, 5, 150, 90} }),
			[]string{
				"apps[web].strategy.steps[1]: 5 does not increase on the step before (5)",
				"apps[web].strategy.steps[2]: 150 is not a percentage from 1 to 100",
				"apps[web].strategy.steps[3]: 90 does not increase on the step before (150)",
				"apps[web].strategy.steps[3]: the last step is 90: canary steps must end at 100",
			}},
		{"ab with header and cookie", edit(inventory.StrategyAB, func(a *inventory.App) { a.Strategy.Match.Cookie = "variant" }),
			[]string{"apps[web].strategy.match: give exactly one of header or cookie"}},
		{"ab value with a backtick", edit(inventory.StrategyAB, func(a *inventory.App) { a.Strategy.Match.Value = "b`" }),
			[]string{"apps[web].strategy.match.value: \"b`\": a backtick cannot be matched in a Traefik rule"}},
		{"storage with rolling and replicas", edit(inventory.StrategyRolling, func(a *inventory.App) {
			a.Storage = &inventory.AppStorage{Size: "1Gi"}
		}), []string{
			"apps[web].strategy.type: rolling runs two pods at once, but the app has storage, and two versions must never share one volume: use strategy: {type: recreate}",
			"apps[web].replicas: 4 replicas would share one ReadWriteOnce volume: an app with storage runs 1 replica",
		}},
		{"storage size and path", edit(inventory.StrategyRecreate, func(a *inventory.App) {
			a.Replicas = 1
			a.Storage = &inventory.AppStorage{Size: "lots", Path: "data"}
		}), []string{
			`apps[web].storage.size: "lots" is not a Kubernetes quantity: write it like 1Gi`,
			`apps[web].storage.path: "data" must be an absolute path inside the container`,
		}},
		{"bad names", edit(inventory.StrategyRolling, func(a *inventory.App) {
			a.Name = "9web"
			a.Env = map[string]string{"A=B": "x"}
			a.Port = 0
			a.Strategy.Check = "healthz"
		}), []string{
			`apps[9web].name: "9web" must be a lowercase letter followed by letters, digits and '-'`,
			"apps[9web].port: 0: set the port the app listens on (1-65535)",
			`apps[9web].strategy.check: "healthz" must be an HTTP path starting with /`,
			`apps[9web].env.A=B: "A=B" is not an environment variable name`,
		}},
		{"unknown strategy", edit("canery", func(*inventory.App) {}),
			[]string{`apps[web].strategy.type: unknown strategy "canery": use recreate, rolling, blue-green, canary, ab, shadow`}},
		{"blue-green without a host is fine", edit(inventory.StrategyBlueGreen, func(a *inventory.App) { a.Expose = &inventory.Expose{} }), nil},
		{"expose without a host is fine for rolling", edit(inventory.StrategyRolling, func(a *inventory.App) { a.Expose = &inventory.Expose{} }), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, p := range apps.Check(tt.app) {
				got = append(got, p.Error())
			}
			if len(got) != len(tt.want) {
				t.Fatalf("problems:\n  %s\nwant %d:\n  %s", strings.Join(got, "\n  "), len(tt.want), strings.Join(tt.want, "\n  "))
			}
			for _, w := range tt.want {
				if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, w) }) {
					t.Errorf("no problem starts with %q in:\n  %s", w, strings.Join(got, "\n  "))
				}
			}
			_, err := apps.Render(tt.app, apps.Release{Stable: "web:1", Colour: apps.Blue}, apps.Options{})
			if (err != nil) != (len(tt.want) > 0) {
				t.Fatalf("Render error %v, want one exactly when Check has problems", err)
			}
		})
	}
}

// The renderer must not drag Pulumi (or Traefik) into `rack render`: the
// package is pure data.
func TestNoPulumiImport(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "pulumi") || strings.Contains(dep, "traefik") {
			t.Errorf("apps imports %s", dep)
		}
	}
}
