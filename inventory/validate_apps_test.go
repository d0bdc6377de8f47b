package inventory

import (
	"slices"
	"strings"
	"testing"
)

// TestAppValidationRules: each rule of validate_apps.go, at its key and
// line, with what to do.
func TestAppValidationRules(t *testing.T) {
	noTraefik := `  metallb: {pools: [{name: lan, addresses: [10.0.0.200-10.0.0.250]}]}
  longhorn: {}`
	noLB := `  traefik: {}
  longhorn: {}`
	cases := []struct {
		name   string
		addons string
		apps   string
		want   []want
	}{
		{"host without traefik", noTraefik,
			`  - {name: web, image: web:1, port: 80, expose: {host: web.home.arpa}}`,
			[]want{{"apps[0].expose.host", 14, "needs Traefik: add addons: {traefik: {}}", SeverityError}}},
		{"expose without host is a LoadBalancer", noTraefik,
			`  - {name: web, image: web:1, port: 80, expose: {}, strategy: {type: blue-green}}`, nil},
		{"expose without host, no MetalLB, servicelb disabled", noLB,
			`  - {name: web, image: web:1, port: 80, expose: {}}`,
			nil}, // k3s' servicelb serves it: only refused when disabled (below)
		{"bad host", "",
			`  - {name: web, image: web:1, port: 80, expose: {host: "Web_Site"}}`,
			[]want{{"apps[0].expose.host", 14, "not a host name", SeverityError}}},
		{"canary needs a host", "",
			`  - {name: web, image: web:1, port: 80, strategy: {type: canary, steps: [10, 100]}}`,
			[]want{{"apps[0].strategy.type", 14, "canary splits requests in Traefik by host", SeverityError}}},
		{"ab needs a host", "",
			`  - {name: web, image: web:1, port: 80, expose: {}, strategy: {type: ab, match: {header: X-V, value: b}}}`,
			[]want{{"apps[0].strategy.type", 14, "set expose: {host: web.home.arpa}", SeverityError}}},
		{"shadow needs a host", "",
			`  - {name: web, image: web:1, port: 80, strategy: {type: shadow, mirror: 10}}`,
			[]want{{"apps[0].strategy.type", 14, "or use rolling or blue-green", SeverityError}}},
		{"storage needs recreate", "",
			`  - {name: db, image: postgres:16, port: 5432, storage: {size: 1Gi}, strategy: {type: rolling}}`,
			[]want{{"apps[0].strategy.type", 14, "two versions must never share one volume: use strategy: {type: recreate}", SeverityError}}},
		{"storage needs one replica", "",
			`  - {name: db, image: postgres:16, port: 5432, replicas: 2, storage: {size: 1Gi}, strategy: {type: recreate}}`,
			[]want{{"apps[0].replicas", 14, "an app with storage runs 1 replica", SeverityError}}},
		{"storage, recreate, one replica", "",
			`  - {name: db, image: postgres:16, port: 5432, storage: {size: 1Gi, path: /var/lib/postgresql/data}, strategy: {type: recreate}}`, nil},
		{"name not a DNS-1035 label", "",
			`  - {name: 1web, image: web:1, port: 80}`,
			[]want{{"apps[0].name", 14, "must start with a lowercase letter", SeverityError}}},
		{"name too long", "",
			`  - {name: ` + strings.Repeat("a", 56) + `, image: web:1, port: 80}`,
			[]want{{"apps[0].name", 14, "at most 55 characters", SeverityError}}},
		{"name of 55 characters", "",
			`  - {name: ` + strings.Repeat("a", 55) + `, image: web:1, port: 80}`, nil},
		{"name of another app's slot", "",
			`  - {name: web, image: web:1, port: 80, strategy: {type: blue-green}}
  - {name: web-green, image: web:1, port: 80}`,
			[]want{{"apps[1].name", 15, `"web-green" is the name of app web's green objects`, SeverityError}}},
		{"name of another app's volume", "",
			`  - {name: db, image: postgres:16, port: 5432, storage: {size: 1Gi}, strategy: {type: recreate}}
  - {name: db-data, image: web:1, port: 80}`,
			[]want{{"apps[1].name", 15, "db's data objects", SeverityError}}},
		{"name of another app's preview", "",
			`  - {name: web-preview, image: web:1, port: 80}
  - {name: web, image: web:1, port: 80}`,
			[]want{{"apps[0].name", 14, "web's preview objects", SeverityError}}},
		{"env key not a variable name", "",
			`  - {name: web, image: web:1, port: 80, env: {"1BAD": x, "has space": y, good.key-1: z}}`,
			[]want{
				{"apps[0].env.1BAD", 14, "is not an environment variable name", SeverityError},
				{"apps[0].env.has space", 14, "is not an environment variable name", SeverityError}}},
		{"secret in plain text", "",
			`  - {name: web, image: web:1, port: 80, env: {DB_PASSWORD: hunter2}}`,
			[]want{{"apps[0].env.DB_PASSWORD", 14, "write DB_PASSWORD: ${WEB_DB_PASSWORD}", SeverityWarning}}},
		{"ab cookie not a token", "",
			`  - {name: web, image: web:1, port: 80, expose: {host: w.home.arpa}, strategy: {type: ab, match: {cookie: "my cookie", value: b}}}`,
			[]want{{"apps[0].strategy.match.cookie", 14, "is not a cookie name", SeverityError}}},
		{"ab cookie name with a backtick", "",
			"  - {name: web, image: web:1, port: 80, expose: {host: w.home.arpa}, strategy: {type: ab, match: {cookie: \"v`x\", value: b}}}",
			[]want{{"apps[0].strategy.match.cookie", 14, "is not a cookie name", SeverityError}}},
		{"ab cookie with an underscore", "",
			`  - {name: web, image: web:1, port: 80, expose: {host: w.home.arpa}, strategy: {type: ab, match: {cookie: my_variant, value: b}}}`, nil},
		{"ab value with a backtick", "",
			"  - {name: web, image: web:1, port: 80, expose: {host: w.home.arpa}, strategy: {type: ab, match: {header: X-V, value: \"b`\"}}}",
			[]want{{"apps[0].strategy.match.value", 14, "a backtick cannot be matched", SeverityError}}},
		{"ab cookie value with a semicolon", "",
			`  - {name: web, image: web:1, port: 80, expose: {host: w.home.arpa}, strategy: {type: ab, match: {cookie: v, value: "b;c"}}}`,
			[]want{{"apps[0].strategy.match.value", 14, "cannot be a cookie value", SeverityError}}},
		{"the root Application's name", "  argocd: {repo: \"https://git.example/gitops\"}",
			`  - {name: root, image: web:1, port: 80}`,
			[]want{{"apps[0].name", 13, "Argo CD's root Application", SeverityError}}},
		{"check with whitespace", "",
			`  - {name: web, image: web:1, port: 80, strategy: {type: rolling, check: "/health z"}}`,
			[]want{{"apps[0].strategy.check", 14, "without spaces", SeverityError}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, ps := parse(t, doc("", tc.addons, tc.apps), nil)
			for _, w := range tc.want {
				if !hasProblem(ps, w) {
					t.Errorf("missing %s:%d %q (%s); got:\n%s", w.path, w.line, w.msg, w.sev, render(ps))
				}
			}
			if len(ps) != len(tc.want) {
				t.Errorf("got %d problems, want %d:\n%s", len(ps), len(tc.want), render(ps))
			}
		})
	}

	t.Run("expose without host and no load balancer at all", func(t *testing.T) {
		text := strings.Replace(doc("", `  traefik: {}`, `  - {name: web, image: web:1, port: 80, expose: {}}`),
			"version: v1.33.5+k3s1", "version: v1.33.5+k3s1\n    disable: [servicelb]", 1)
		_, ps := parse(t, text, nil)
		w := want{"apps[0].expose", 14, "add addons.metallb with an address pool", SeverityError}
		if !hasProblem(ps, w) || len(ps) != 1 {
			t.Errorf("want %v, got:\n%s", w, render(ps))
		}
	})
}

// TestEnvFromEnvironment: the env keys whose values came from ${VAR} are
// the app's secrets; the values are expanded, and no problem leaks them.
func TestEnvFromEnvironment(t *testing.T) {
	text := doc("", "", `  - {name: web, image: web:1, port: 80, env: {A: plain, PASSWORD: "${WEB_PW}", URL: "postgres://u:${WEB_PW}@db/x"}}
  - {name: db, image: postgres:16, port: 5432, env: {POSTGRES_PASSWORD: "${WEB_PW}"}}`)
	inv, ps := parse(t, text, map[string]string{"WEB_PW": "s3cret"})
	if len(ps) != 0 {
		t.Fatalf("unexpected problems:\n%s", render(ps))
	}
	if got := inv.EnvFromEnvironment(0); !slices.Equal(got, []string{"PASSWORD", "URL"}) {
		t.Errorf("apps[0] secret env %v, want [PASSWORD URL]", got)
	}
	if got := inv.EnvFromEnvironment(1); !slices.Equal(got, []string{"POSTGRES_PASSWORD"}) {
		t.Errorf("apps[1] secret env %v", got)
	}
	if inv.EnvFromEnvironment(2) != nil || inv.EnvFromEnvironment(-1) != nil {
		t.Error("secret env of an app that does not exist")
	}
	if inv.Apps[0].Env["URL"] != "postgres://u:s3cret@db/x" {
		t.Errorf("URL = %q, want it expanded", inv.Apps[0].Env["URL"])
	}
}

// TestIsCookieName: the cookie name rule validation and the renderer
// (apps.Check) share.
func TestIsCookieName(t *testing.T) {
	for s, ok := range map[string]bool{"variant": true, "my_variant": true, "a.b-c~d": true, "": false, "a b": false, "a;b": false, "a`b": false, "a=b": false, "é": false} {
		if IsCookieName(s) != ok {
			t.Errorf("IsCookieName(%q) = %v, want %v", s, !ok, ok)
		}
	}
}
