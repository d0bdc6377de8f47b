package inventory

import (
	"fmt"
	"regexp"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Taint is a node taint as written in the inventory: key=value:Effect or key:Effect.
type Taint struct {
	Key, Value, Effect string
}

var taintSpec = regexp.MustCompile(`^([^=:]+)(=([^:]*))?:(NoSchedule|PreferNoSchedule|NoExecute)$`)

// ParseTaint reads key=value:Effect or key:Effect.
func ParseTaint(s string) (Taint, error) {
	m := taintSpec.FindStringSubmatch(s)
	if m == nil {
		return Taint{}, fmt.Errorf("%q is not a taint: write key=value:Effect or key:Effect with Effect NoSchedule, PreferNoSchedule or NoExecute", s)
	}
	if errs := validation.IsQualifiedName(m[1]); len(errs) > 0 {
		return Taint{}, fmt.Errorf("taint key %q: %s", m[1], errs[0])
	}
	if m[3] != "" {
		if errs := validation.IsValidLabelValue(m[3]); len(errs) > 0 {
			return Taint{}, fmt.Errorf("taint value %q: %s", m[3], errs[0])
		}
	}
	return Taint{Key: m[1], Value: m[3], Effect: m[4]}, nil
}

// String is the inventory form.
func (t Taint) String() string {
	if t.Value == "" {
		return t.Key + ":" + t.Effect
	}
	return t.Key + "=" + t.Value + ":" + t.Effect
}
