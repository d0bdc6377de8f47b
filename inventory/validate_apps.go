package inventory

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"unicode"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

// MaxAppName is the longest app name: apps/ derives object names from it
// with suffixes up to "-preview", and a Service name is a DNS-1035 label of
// at most 63 characters.
const MaxAppName = 63 - len("-preview")

// AppSuffixes are the suffixes apps/ adds to an app's name for the objects
// of its slots, preview and volume. No app may be named like another app's
// object: their Deployments or Services would be one and the same.
var AppSuffixes = []string{"-blue", "-green", "-preview", "-data"}

// EnvFromEnvironment returns the env keys of apps[i] whose value came from
// ${VAR} expansion, sorted: secrets, which rack delivers through a Secret
// (a Pulumi secret), never in plain text in a Deployment or in `rack render`
// output.
func (inv *Inventory) EnvFromEnvironment(i int) []string {
	if i < 0 || i >= len(inv.Apps) {
		return nil
	}
	var keys []string
	for k := range inv.Apps[i].Env {
		if inv.fromEnv[fmt.Sprintf("apps[%d].env.%s", i, k)] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// secretish are words in an env key that suggest a secret value.
var secretish = []string{"PASSWORD", "PASSWD", "SECRET", "TOKEN", "APIKEY", "API_KEY", "PRIVATE_KEY"}

func (v *validator) apps() {
	inv := v.inv
	names := map[string]string{}
	for i, app := range inv.Apps {
		p := fmt.Sprintf("apps[%d]", i)
		v.uniqueName(p+".name", app.Name, names, len(validation.IsDNS1035Label(app.Name)) == 0 && len(app.Name) <= MaxAppName,
			"the app's name, like frontendweb",
			fmt.Sprintf("%q must start with a lowercase letter, then lowercase letters, digits and '-', at most %d characters: it names the app's Deployments and Services, with suffixes up to -preview", app.Name, MaxAppName),
			"rename one")
		if app.Image == "" {
			v.errorf(p+".image", "is required: the container image with its tag, like frontendweb:1.4.0")
		} else if strings.ContainsAny(app.Image, " \t") {
			v.errorf(p+".image", "%q is not an image reference: write it like frontendweb:1.4.0, without spaces", app.Image)
		}
		if app.Port < 1 || app.Port > 65535 {
			v.errorf(p+".port", "is required: the container port the app listens on (1-65535)")
		}
		if app.Replicas < 0 {
			v.errorf(p+".replicas", "%d: must be 0 or more (0 means the default, 1)", app.Replicas)
		}
		v.expose(p, app)
		v.appStorage(p, app)
		v.env(i, p, app)
		v.strategy(p+".strategy", app.Strategy)
		v.routedStrategy(p, app)
	}
	// An app named like another app's slot, preview or volume.
	for i, app := range inv.Apps {
		for _, other := range inv.Apps {
			for _, suffix := range AppSuffixes {
				if other.Name != "" && app.Name == other.Name+suffix {
					v.errorf(fmt.Sprintf("apps[%d].name", i), "%q is the name of app %s's %s objects: rename this app (or %s)", app.Name, other.Name, strings.TrimPrefix(suffix, "-"), other.Name)
				}
			}
		}
		if a := inv.Addons.ArgoCD; a != nil && app.Name == argoRootApp {
			v.errorf(fmt.Sprintf("apps[%d].name", i), "%q is the name of Argo CD's root Application (app of apps), which rack render's child Applications sit beside: rename the app", app.Name)
		}
	}
}

// argoRootApp is the name of the root Application the argocd addon creates.
const argoRootApp = "root"

// expose: a host needs Traefik; no host gets a LoadBalancer Service.
func (v *validator) expose(p string, app App) {
	e := app.Expose
	if e == nil {
		return
	}
	if e.Host == "" {
		// A LoadBalancer Service: MetalLB's, or k3s' servicelb without it.
		if v.inv.Addons.MetalLB == nil && slices.Contains(v.inv.Cluster.K3s.Disable, "servicelb") {
			v.errorf(p+".expose", "without a host the app gets a LoadBalancer Service, but there is no addons.metallb and k3s' servicelb is disabled: add addons.metallb with an address pool, or set expose.host (through Traefik)")
		}
		return
	}
	if len(validation.IsDNS1123Subdomain(e.Host)) > 0 {
		v.errorf(p+".expose.host", "%q is not a host name, like web.home.arpa", e.Host)
		return
	}
	if v.inv.Addons.Traefik == nil {
		v.errorf(p+".expose.host", "routing %s to the app needs Traefik: add addons: {traefik: {}}, or write expose: {} for a LoadBalancer Service from MetalLB instead", e.Host)
	}
}

func (v *validator) appStorage(p string, app App) {
	st := app.Storage
	if st == nil {
		return
	}
	if _, err := resource.ParseQuantity(st.Size); err != nil {
		v.errorf(p+".storage.size", "%q is not a Kubernetes quantity: write it like 1Gi", st.Size)
	}
	if st.Class == "longhorn" && v.inv.Addons.Longhorn == nil {
		v.errorf(p+".storage.class", "class longhorn but addons.longhorn is not set: add it, or use another class")
	}
	if st.Path != "" && !filepath.IsAbs(st.Path) {
		v.errorf(p+".storage.path", "%q must be an absolute path inside the container, like /var/lib/postgresql/data", st.Path)
	}
	// One ReadWriteOnce volume: two pods on it are two versions (or two
	// writers) on one database.
	if t := app.Strategy.Type; slices.Contains(Strategies, t) && t != StrategyRecreate {
		v.errorf(p+".strategy.type", "%s runs the old and the new version at once, but the app has storage, and two versions must never share one volume: use strategy: {type: recreate}", t)
	}
	if app.Replicas > 1 {
		v.errorf(p+".replicas", "%d replicas would share one ReadWriteOnce volume: an app with storage runs 1 replica", app.Replicas)
	}
}

func (v *validator) env(i int, p string, app App) {
	keys := make([]string, 0, len(app.Env))
	for k := range app.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		kp := p + ".env." + k
		if msgs := validation.IsEnvVarName(k); len(msgs) > 0 {
			v.errorf(kp, "%q is not an environment variable name (%s): use letters, digits, '_', '-' and '.', not starting with a digit", k, strings.Join(msgs, "; "))
			continue
		}
		if v.inv.fromEnv[kp] || app.Env[k] == "" {
			continue
		}
		upper := strings.ToUpper(k)
		for _, w := range secretish {
			if strings.Contains(upper, w) {
				v.warnf(kp, "looks like a secret written in plain text in the inventory: write %s: ${%s} and export %s; rack then delivers it through a Secret, never in plain text", k, envVarFor(app.Name, k), envVarFor(app.Name, k))
				break
			}
		}
	}
}

// envVarFor suggests an environment variable name for an app's env key.
func envVarFor(app, key string) string {
	s := strings.ToUpper(app + "_" + key)
	return strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// routedStrategy: the strategies that split requests in Traefik need the
// app's route.
func (v *validator) routedStrategy(p string, app App) {
	switch app.Strategy.Type {
	case StrategyCanary, StrategyAB, StrategyShadow:
	default:
		return
	}
	if app.Expose == nil || app.Expose.Host == "" {
		v.errorf(p+".strategy.type", "%s splits requests in Traefik by host, so the app needs a route: set expose: {host: %s.home.arpa} (with addons.traefik), or use rolling or blue-green", app.Strategy.Type, app.Name)
	}
}

func (v *validator) strategy(p string, s Strategy) {
	if !slices.Contains(Strategies, s.Type) {
		v.errorf(p+".type", "unknown strategy %q: use %s%s", s.Type, strings.Join(Strategies, ", "), didYouMean(s.Type, Strategies))
		return
	}
	if s.Check != "" && (!strings.HasPrefix(s.Check, "/") || strings.ContainsFunc(s.Check, unicode.IsSpace)) {
		v.errorf(p+".check", "%q must be an HTTP path starting with /, without spaces, like /healthz", s.Check)
	}
	if s.Type != StrategyCanary && len(s.Steps) > 0 {
		v.errorf(p+".steps", "steps only apply to the canary strategy: remove them")
	}
	if s.Type != StrategyAB && s.Match != nil {
		v.errorf(p+".match", "match only applies to the ab strategy: remove it")
	}
	if s.Type != StrategyShadow && s.Mirror != 0 {
		v.errorf(p+".mirror", "mirror only applies to the shadow strategy: remove it")
	}
	switch s.Type {
	case StrategyCanary:
		if len(s.Steps) == 0 {
			v.errorf(p+".steps", "canary needs traffic steps, increasing percentages ending at 100, like [5, 25, 50, 100]")
		}
		for i, step := range s.Steps {
			sp := fmt.Sprintf("%s.steps[%d]", p, i)
			switch {
			case step < 1 || step > 100:
				v.errorf(sp, "%d is not a percentage from 1 to 100", step)
			case i > 0 && step <= s.Steps[i-1]:
				v.errorf(sp, "%d does not increase on the step before (%d): steps must be increasing percentages", step, s.Steps[i-1])
			}
		}
		if n := len(s.Steps); n > 0 && s.Steps[n-1] != 100 {
			v.errorf(fmt.Sprintf("%s.steps[%d]", p, n-1), "the last step is %d: canary steps must end at 100 (the full release)", s.Steps[n-1])
		}
	case StrategyAB:
		m := s.Match
		switch {
		case m == nil:
			v.errorf(p+".match", "ab needs a match: {header: X-Variant, value: b} or {cookie: variant, value: b}")
		case (m.Header == "") == (m.Cookie == ""):
			v.errorf(p+".match", "give exactly one of header or cookie, like {header: X-Variant, value: b}")
		default:
			switch {
			case m.Header != "" && len(validation.IsHTTPHeaderName(m.Header)) > 0:
				v.errorf(p+".match.header", "%q is not an HTTP header name, like X-Variant", m.Header)
			case m.Cookie != "" && !IsCookieName(m.Cookie):
				v.errorf(p+".match.cookie", "%q is not a cookie name (an HTTP token: letters, digits and !#$%%&'*+-.^_|~), like variant", m.Cookie)
			}
			switch {
			case m.Value == "":
				v.errorf(p+".match.value", "is required: the header or cookie value that selects the candidate")
			case strings.Contains(m.Value, "`"):
				// Traefik rules quote with backticks.
				v.errorf(p+".match.value", "%q: a backtick cannot be matched in a Traefik rule; choose another value", m.Value)
			case m.Cookie != "" && strings.ContainsAny(m.Value, cookieValueForbidden):
				v.errorf(p+".match.value", "%q cannot be a cookie value (no spaces, quotes, commas, semicolons or backslashes): choose another value", m.Value)
			}
		}
	case StrategyShadow:
		if s.Mirror < 1 || s.Mirror > 100 {
			v.errorf(p+".mirror", "shadow needs mirror: the percent of requests (1-100) copied to the candidate, like mirror: 10")
		}
	}
}

// IsCookieName reports whether s is a cookie name rack can match: an HTTP
// token (RFC 9110), without the backtick Traefik rules quote with.
func IsCookieName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("!#$%&'*+-.^_|~", r):
		default:
			return false
		}
	}
	return true
}

// cookieValueForbidden are the characters a cookie value cannot hold
// (RFC 6265 cookie-octet), besides controls.
const cookieValueForbidden = " \t\";,\\"
