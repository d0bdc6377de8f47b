// Package addontest runs rack's Pulumi components under pulumi.WithMocks,
// records every resource they register (type, name, inputs, parent,
// dependencies), and sends the Kubernetes objects among them to a real API
// server as server-side dry runs. It is a test helper, like net/http/httptest.
package addontest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// Resource is one registered resource as the engine would have seen it.
type Resource struct {
	Type   string // type token, e.g. kubernetes:core/v1:Namespace
	Name   string // Pulumi name
	Custom bool   // false for components
	Inputs resource.PropertyMap
	// Parent is the parent's "type::name" (empty for the stack's children
	// registered without a parent).
	Parent string
	// URN is the resource's URN in stack Stack of project Project: what
	// the engine keys its state on.
	URN string
	// DependsOn lists "type::name" of every resource this one depends on,
	// explicitly (DependsOn) or through its inputs.
	DependsOn []string
	// Provider is the provider reference ("urn::id"); empty for the default.
	Provider string
	// RetainOnDelete: removing it from the program leaves it in the cluster.
	RetainOnDelete bool
}

// Key is the resource's "type::name", the form Parent and DependsOn use.
func (r Resource) Key() string { return r.Type + "::" + r.Name }

// Object returns the resource's inputs as a plain Kubernetes object.
func (r Resource) Object() map[string]any { return r.Inputs.Mappable() }

// Field returns the input at a dotted path ("spec.addresses"), or nil.
func (r Resource) Field(path string) any {
	var v any = r.Object()
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// The project and stack programs run in under Run.
const (
	Project = "rack"
	Stack   = "test"
)

// Mocks implements pulumi.MockResourceMonitor and records what is registered.
type Mocks struct {
	mu        sync.Mutex
	resources []Resource
}

// NewResource records the registration and echoes the inputs back as state.
func (m *Mocks) NewResource(args pulumi.MockResourceArgs) (string, resource.PropertyMap, error) {
	r := Resource{Type: args.TypeToken, Name: args.Name, Custom: args.Custom, Inputs: args.Inputs, Provider: args.Provider}
	r.URN = string(resource.CreateURN(args.Name, args.TypeToken, resource.URN(args.RegisterRPC.GetParent()), Project, Stack))
	if rpc := args.RegisterRPC; rpc != nil {
		r.RetainOnDelete = rpc.GetRetainOnDelete()
		r.Parent = urnKey(rpc.GetParent())
		for _, d := range rpc.GetDependencies() {
			r.DependsOn = append(r.DependsOn, urnKey(d))
		}
		for _, deps := range rpc.GetPropertyDependencies() {
			for _, d := range deps.GetUrns() {
				r.DependsOn = append(r.DependsOn, urnKey(d))
			}
		}
		slices.Sort(r.DependsOn)
		r.DependsOn = slices.Compact(r.DependsOn)
	}
	m.mu.Lock()
	m.resources = append(m.resources, r)
	m.mu.Unlock()
	return args.Name + "-id", args.Inputs, nil
}

// Call answers invokes; rack's components make none.
func (m *Mocks) Call(args pulumi.MockCallArgs) (resource.PropertyMap, error) {
	return nil, fmt.Errorf("unexpected invoke %s", args.Token)
}

// Resources returns what was registered, in registration order.
func (m *Mocks) Resources() []Resource {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.resources)
}

// Find returns the resource of that type and name.
func (m *Mocks) Find(typ, name string) (Resource, bool) {
	for _, r := range m.Resources() {
		if r.Type == typ && r.Name == name {
			return r, true
		}
	}
	return Resource{}, false
}

// Component returns the component of type typ named name and fails the test
// unless every other resource registered is its child: one component per
// addon, everything it creates parented to it.
func (m *Mocks) Component(t testing.TB, typ, name string) Resource {
	t.Helper()
	comp, ok := m.Find(typ, name)
	if !ok {
		t.Fatalf("no %s component named %q", typ, name)
	}
	for _, r := range m.Resources() {
		if r.Type != typ && r.Parent != comp.Key() {
			t.Errorf("%s is parented to %q, want the component %s", r.Key(), r.Parent, comp.Key())
		}
	}
	return comp
}

// OfType returns the resources of one type, in registration order.
func (m *Mocks) OfType(typ string) []Resource {
	return m.where(func(r Resource) bool { return r.Type == typ })
}

// where returns the resources keep keeps, in registration order.
func (m *Mocks) where(keep func(Resource) bool) []Resource {
	var out []Resource
	for _, r := range m.Resources() {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// Run runs program under mocks and returns what it registered; all outputs
// have resolved when it returns.
func Run(program pulumi.RunFunc) (*Mocks, error) {
	m := &Mocks{}
	err := pulumi.RunErr(program, pulumi.WithMocks(Project, Stack, m))
	return m, err
}

// MustRun is Run failing the test on error.
func MustRun(t testing.TB, program pulumi.RunFunc) *Mocks {
	t.Helper()
	m, err := Run(program)
	if err != nil {
		t.Fatalf("program failed under mocks: %v", err)
	}
	return m
}

// urnKey turns urn:pulumi:stack::project::parent$type::name into type::name.
func urnKey(urn string) string {
	if urn == "" {
		return ""
	}
	parts := strings.Split(urn, "::")
	if len(parts) < 4 {
		return urn
	}
	qualified := parts[2]
	typ := qualified[strings.LastIndex(qualified, "$")+1:]
	return typ + "::" + strings.Join(parts[3:], "::")
}

// Children returns the resources whose parent is the resource of key.
func (m *Mocks) Children(key string) []Resource {
	return m.where(func(r Resource) bool { return r.Parent == key })
}

// Strings converts a recorded list input ([]any of strings) to []string.
func Strings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, e := range list {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}
