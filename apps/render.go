package apps

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/homelab/rack/inventory"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Options are the renderer's settings that are not in the inventory.
type Options struct {
	// Namespace holds the app's objects (default DefaultNamespace). Render
	// does not emit the Namespace itself: every app shares it.
	Namespace string
	// SecretEnv names the keys of app.Env that are secrets (their value
	// came from ${VAR} in the inventory: inventory.EnvFromEnvironment).
	// Their values never appear in a rendered object: Deployments read them
	// from the Secret <app>-env, which Render emits with SecretPlaceholder
	// values for the deliverer to fill (Pulumi: a secret; rack render: a
	// placeholder to seal).
	SecretEnv []string
}

// Render returns the Kubernetes objects of app in release state rel (as
// Deploy, Promote or Rollback left it), in the order they should be
// applied: by Wave, then kind, then name. It is pure: the same input gives
// the same objects, for Pulumi and for `rack render` alike.
//
//	rel, err := apps.Deploy(app, saved)       // rack up
//	objs, err := apps.Render(app, rel, apps.Options{})
func Render(app inventory.App, rel Release, opts Options) ([]*unstructured.Unstructured, error) {
	s, err := strategyOf(app)
	if err != nil {
		return nil, err
	}
	if ps := Check(app); len(ps) > 0 {
		errs := make([]error, len(ps))
		for i, p := range ps {
			errs[i] = p
		}
		return nil, errors.Join(errs...)
	}
	if err := checkRelease(app, s, rel); err != nil {
		return nil, err
	}
	if err := checkSecretEnv(app, opts.SecretEnv); err != nil {
		return nil, err
	}
	objs := s.Render(app, rel, opts)
	markRoutes(objs)
	b := newBuilder(app, opts)
	objs = append(objs, b.pdb())
	if len(opts.SecretEnv) > 0 {
		objs = append(objs, b.envSecret())
	}
	if app.Storage != nil {
		pvc, err := b.pvc()
		if err != nil {
			return nil, err
		}
		objs = append(objs, pvc)
	}
	sortObjects(objs)
	return objs, nil
}

// checkRelease refuses a state the app's strategy cannot have: the caller
// skipped Deploy after the inventory changed.
func checkRelease(app inventory.App, s Strategy, rel Release) error {
	const fix = "run rack up so the release state follows the inventory"
	switch {
	case rel.Stable == "":
		return problem(app, "image", "the release state has no stable image yet: %s", fix)
	case rel.Candidate != "" && !s.SideBySide():
		return problem(app, "strategy.type", "the release state has candidate %s, but %s has no candidates: %s", rel.Candidate, s.Type(), fix)
	case rel.Candidate != "" && s.Type() == inventory.StrategyCanary && (rel.Step < 0 || rel.Step >= len(app.Strategy.Steps)):
		return problem(app, "strategy.steps", "the release is at step %d of %d steps: %s", rel.Step, len(app.Strategy.Steps), fix)
	case rel.Colour != "" && rel.Colour != Blue && rel.Colour != Green:
		return problem(app, "strategy.type", "the release state names colour %q, not blue or green: %s", rel.Colour, fix)
	}
	return nil
}

// longestSuffix is the longest suffix rack adds to an app's name
// ("-preview"); a Service name is a DNS label of at most 63 characters.
const longestSuffix = len("-preview")

// Check returns every problem in app that stops it from rendering, each
// naming the key at fault and the fix. Inventory validation reports the
// same rules with file and line.
func Check(app inventory.App) []*Problem {
	var ps []*Problem
	add := func(key, format string, args ...any) { ps = append(ps, problem(app, key, format, args...)) }
	if msgs := validation.IsDNS1035Label(app.Name); len(msgs) > 0 || len(app.Name) > 63-longestSuffix {
		add("name", "%q must be a lowercase letter followed by letters, digits and '-', at most %d characters (it names Deployments and Services, with suffixes up to %q)", app.Name, 63-longestSuffix, "-preview")
	}
	if app.Image == "" {
		add("image", "is required: the container image with its tag, like %s:1.0.0", app.Name)
	}
	if app.Port < 1 || app.Port > 65535 {
		add("port", "%d: set the port the app listens on (1-65535)", app.Port)
	}
	if app.Replicas < 0 {
		add("replicas", "%d: must be 1 or more (0 means the default, 1)", app.Replicas)
	}
	if e := app.Expose; e != nil && e.Host != "" && len(validation.IsDNS1123Subdomain(e.Host)) > 0 {
		add("expose.host", "%q is not a host name, like web.home.arpa", e.Host)
	}
	if c := app.Strategy.Check; c != "" && (!strings.HasPrefix(c, "/") || strings.ContainsFunc(c, unicode.IsSpace)) {
		add("strategy.check", "%q must be an HTTP path starting with /, like /healthz", c)
	}
	names := make([]string, 0, len(app.Env))
	for k := range app.Env {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if msgs := validation.IsEnvVarName(k); len(msgs) > 0 {
			add("env."+k, "%q is not an environment variable name: %s", k, strings.Join(msgs, "; "))
		}
	}
	s, err := strategyOf(app)
	if err != nil {
		var p *Problem
		errors.As(err, &p)
		return append(ps, p)
	}
	if st := app.Storage; st != nil {
		if _, err := resource.ParseQuantity(st.Size); err != nil {
			add("storage.size", "%q is not a Kubernetes quantity: write it like 1Gi", st.Size)
		}
		if st.Path != "" && !path.IsAbs(st.Path) {
			add("storage.path", "%q must be an absolute path inside the container, like /var/lib/postgresql/data", st.Path)
		}
		// One ReadWriteOnce volume: two pods on it would be two versions
		// (or two writers) on one database.
		if s.Type() != inventory.StrategyRecreate {
			add("strategy.type", "%s runs two pods at once, but the app has storage, and two versions must never share one volume: use strategy: {type: recreate}", s.Type())
		}
		if app.Replicas > 1 {
			add("replicas", "%d replicas would share one ReadWriteOnce volume: an app with storage runs 1 replica", app.Replicas)
		}
	}
	return append(ps, s.Check(app)...)
}

// Wave is when obj is applied: every object of a wave is applied, and
// healthy, before any of the next (Argo CD sync waves; the Pulumi deliverer
// makes each object depend on those of the waves before it).
func Wave(obj *unstructured.Unstructured) int {
	w, err := strconv.Atoi(obj.GetAnnotations()[AnnotationSyncWave])
	if err != nil {
		return WaveWorkload
	}
	return w
}

var kindOrder = map[string]int{
	"Secret": -1, "PersistentVolumeClaim": 0, "Service": 1, "Deployment": 2, "PodDisruptionBudget": 3,
	"TraefikService": 4, "IngressRoute": 5,
}

func sortObjects(objs []*unstructured.Unstructured) {
	sort.SliceStable(objs, func(i, j int) bool {
		a, b := objs[i], objs[j]
		if wa, wb := Wave(a), Wave(b); wa != wb {
			return wa < wb
		}
		if ka, kb := kindOrder[a.GetKind()], kindOrder[b.GetKind()]; ka != kb {
			return ka < kb
		}
		return a.GetName() < b.GetName()
	})
}

// Key names an object uniquely within an app's namespace: Kind/name.
func Key(obj *unstructured.Unstructured) string {
	return fmt.Sprintf("%s/%s", obj.GetKind(), obj.GetName())
}
