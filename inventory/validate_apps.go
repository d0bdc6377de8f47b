package inventory

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

func (v *validator) apps() {
	inv := v.inv
	names := map[string]string{}
	for i, app := range inv.Apps {
		p := fmt.Sprintf("apps[%d]", i)
		switch {
		case app.Name == "":
			v.errorf(p+".name", "is required: the app's name, like frontendweb")
		case len(validation.IsDNS1123Label(app.Name)) > 0:
			v.errorf(p+".name", "%q must be lowercase letters, digits and '-' (it names Deployments and Services)", app.Name)
		default:
			if prev, dup := names[app.Name]; dup {
				v.errorf(p+".name", "duplicate app name %q (also %s)", app.Name, prev)
			}
			names[app.Name] = p
		}
		if app.Image == "" {
			v.errorf(p+".image", "is required: the container image with its tag, like frontendweb:1.4.0")
		} else if strings.ContainsAny(app.Image, " \t") {
			v.errorf(p+".image", "%q is not an image reference", app.Image)
		}
		if app.Port < 1 || app.Port > 65535 {
			v.errorf(p+".port", "is required: the container port the app listens on (1-65535)")
		}
		if app.Replicas < 0 {
			v.errorf(p+".replicas", "%d: must be 0 or more", app.Replicas)
		}
		if app.Expose != nil && len(validation.IsDNS1123Subdomain(app.Expose.Host)) > 0 {
			v.errorf(p+".expose.host", "%q is not a host name, like web.home.arpa", app.Expose.Host)
		}
		if st := app.Storage; st != nil {
			if _, err := resource.ParseQuantity(st.Size); err != nil {
				v.errorf(p+".storage.size", "%q is not a Kubernetes quantity: write it like 1Gi", st.Size)
			}
			if st.Class == "longhorn" && inv.Addons.Longhorn == nil {
				v.errorf(p+".storage.class", "class longhorn but addons.longhorn is not set: add it, or use another class")
			}
			if st.Path != "" && !filepath.IsAbs(st.Path) {
				v.errorf(p+".storage.path", "%q must be an absolute path inside the container", st.Path)
			}
		}
		v.strategy(p+".strategy", app.Strategy)
	}
}

func (v *validator) strategy(p string, s Strategy) {
	if !slices.Contains(Strategies, s.Type) {
		v.errorf(p+".type", "unknown strategy %q: use %s%s", s.Type, strings.Join(Strategies, ", "), didYouMean(s.Type, Strategies))
		return
	}
	if s.Check != "" && !strings.HasPrefix(s.Check, "/") {
		v.errorf(p+".check", "%q must be an HTTP path starting with /, like /healthz", s.Check)
	}
	if s.Type != StrategyCanary && len(s.Steps) > 0 {
		v.errorf(p+".steps", "steps only apply to the canary strategy")
	}
	if s.Type != StrategyAB && s.Match != nil {
		v.errorf(p+".match", "match only applies to the ab strategy")
	}
	if s.Type != StrategyShadow && s.Mirror != 0 {
		v.errorf(p+".mirror", "mirror only applies to the shadow strategy")
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
			v.errorf(p+".match", "give exactly one of header or cookie")
		case m.Value == "":
			v.errorf(p+".match.value", "is required: the header or cookie value that selects the candidate")
		case m.Header != "" && len(validation.IsHTTPHeaderName(m.Header)) > 0:
			v.errorf(p+".match.header", "%q is not an HTTP header name", m.Header)
		}
	case StrategyShadow:
		if s.Mirror < 1 || s.Mirror > 100 {
			v.errorf(p+".mirror", "shadow needs mirror: the percent of requests (1-100) copied to the candidate")
		}
	}
}
