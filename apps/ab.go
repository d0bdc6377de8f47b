package apps

import (
	"strings"

	"github.com/homelab/rack/inventory"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
)

// ab sends the requests that match strategy.match (a header, or a cookie)
// to the candidate and every other request to the stable version, through
// a higher-priority route on the app's host. Promote releases the
// candidate to everyone.
type ab struct{}

func (ab) Type() string     { return inventory.StrategyAB }
func (ab) SideBySide() bool { return true }

func (ab) Check(app inventory.App) []*Problem {
	ps := needsHost(&builder{app: app}, inventory.StrategyAB)
	m := app.Strategy.Match
	switch {
	case m == nil:
		ps = append(ps, problem(app, "strategy.match", "ab needs a match: {header: X-Variant, value: b} or {cookie: variant, value: b}"))
	case (m.Header == "") == (m.Cookie == ""):
		ps = append(ps, problem(app, "strategy.match", "give exactly one of header or cookie, like {header: X-Variant, value: b}"))
	case m.Value == "":
		ps = append(ps, problem(app, "strategy.match.value", "is required: the header or cookie value that selects the candidate"))
	case strings.Contains(m.Value, "`"):
		// Traefik rules quote with backticks.
		ps = append(ps, problem(app, "strategy.match.value", "%q: a backtick cannot be matched in a Traefik rule; choose another value", m.Value))
	case m.Header != "" && len(validation.IsHTTPHeaderName(m.Header)) > 0:
		ps = append(ps, problem(app, "strategy.match.header", "%q is not an HTTP header name, like X-Variant", m.Header))
	case m.Cookie != "" && !inventory.IsCookieName(m.Cookie):
		ps = append(ps, problem(app, "strategy.match.cookie", "%q is not a cookie name (an HTTP token), like variant", m.Cookie))
	case m.Cookie != "" && strings.ContainsAny(m.Value, " \t\";,\\"):
		ps = append(ps, problem(app, "strategy.match.value", "%q cannot be a cookie value (no spaces, quotes, commas, semicolons or backslashes): choose another value", m.Value))
	}
	return ps
}

func (ab) Promote(_ inventory.App, rel Release) Release { return finish(rel) }

// Weights: by weight every request goes to the stable version; the
// candidate gets the matching requests, whatever their share.
func (ab) Weights(inventory.App, Release) Weights { return fullWeights }

func (ab) Render(app inventory.App, rel Release, opts Options) []*unstructured.Unstructured {
	b := newBuilder(app, opts)
	stable := colourOr(rel.Colour)
	var routes []route
	if rel.Candidate != "" {
		routes = append(routes, route{match: hostRule(b.host()) + " && " + matchRule(app.Strategy.Match), priority: PriorityMatch, to: svc(b.slotName(stable.Other()))})
	}
	routes = append(routes, b.mainRoute(svc(b.slotName(stable))))
	return append(b.sideBySide(rel), b.ingressRoute(app.Name, "", routes...))
}

func matchRule(m *inventory.Match) string {
	if m.Cookie != "" {
		return cookieRule(m.Cookie, m.Value)
	}
	return headerRule(m.Header, m.Value)
}
