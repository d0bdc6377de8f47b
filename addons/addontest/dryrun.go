package addontest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/homelab/rack/internal/testcluster"
)

// ModuleDir returns the folder of a module ("path@version") in the Go module
// cache, downloading it when needed: upstream CRDs are read from there at test
// time rather than copied into the repository.
func ModuleDir(ctx context.Context, module string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", module)
	// Outside any module, so nothing but this one module is resolved.
	cmd.Dir = os.TempDir()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var mod struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &mod); jerr == nil && mod.Error != "" {
		return "", fmt.Errorf("go mod download %s: %s", module, mod.Error)
	}
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %v: %s", module, err, strings.TrimSpace(stderr.String()))
	}
	if mod.Dir == "" {
		return "", fmt.Errorf("go mod download %s: no Dir in %q", module, out)
	}
	return mod.Dir, nil
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// Server sends objects to one API server as dry runs.
type Server struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

// NewServer connects to the API server of cfg.
func NewServer(cfg *rest.Config) (*Server, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Server{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))}, nil
}

// Start starts a test control plane (internal/testcluster) and returns it
// with a Server on it, once install (InstallTraefikCRDs, or a function that
// calls InstallCRDs) has put the CRDs the test needs there.
func Start(t testing.TB, install func(*Server, context.Context) error) (*testcluster.Cluster, *Server) {
	t.Helper()
	c := testcluster.New(t)
	srv, err := NewServer(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := install(srv, ctx); err != nil {
		t.Fatal(err)
	}
	return c, srv
}

// Dynamic returns the server's dynamic client.
func (s *Server) Dynamic() dynamic.Interface { return s.dyn }

// InstallCRDs creates the CustomResourceDefinitions in files (YAML, one or
// more documents each) and waits until the API server serves them.
func (s *Server) InstallCRDs(ctx context.Context, files ...string) error {
	var names []string
	for _, f := range files {
		objs, err := readYAML(f)
		if err != nil {
			return err
		}
		for _, o := range objs {
			if o.GetKind() != "CustomResourceDefinition" {
				continue
			}
			_, err := s.dyn.Resource(crdGVR).Create(ctx, o, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("%s: create CRD %s: %w", f, o.GetName(), err)
			}
			names = append(names, o.GetName())
		}
	}
	for _, n := range names {
		if err := s.waitEstablished(ctx, n); err != nil {
			return err
		}
	}
	s.mapper.Reset()
	return nil
}

func (s *Server) waitEstablished(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		o, err := s.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
			for _, c := range conds {
				if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRD %s not Established: %v (last error %v)", name, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func readYAML(file string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 64*1024)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if len(m) > 0 {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
}

// IsKubernetesObject reports whether r is an object the API server stores
// (as opposed to a component, a provider or a Helm release).
func IsKubernetesObject(r Resource) bool {
	return r.Custom && strings.HasPrefix(r.Type, "kubernetes:") && !strings.HasPrefix(r.Type, "kubernetes:helm.sh/")
}

// isPatch reports whether r is one of pulumi-kubernetes' *Patch resources,
// a server-side apply patch of an object that exists already.
func isPatch(r Resource) bool { return strings.HasSuffix(r.Type, "Patch") }

// DryRun sends obj to the API server as a create with dryRun=All and strict
// field validation: unknown or duplicate fields fail as well as wrong types.
func (s *Server) DryRun(ctx context.Context, obj map[string]any) error {
	u := &unstructured.Unstructured{Object: obj}
	ri, err := s.resourceFor(u)
	if err != nil {
		return err
	}
	_, err = ri.Create(ctx, u, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
	return err
}

// DryRunApply sends obj as a server-side apply patch with dryRun=All and
// strict field validation; the object must exist.
func (s *Server) DryRunApply(ctx context.Context, obj map[string]any) error {
	u := &unstructured.Unstructured{Object: obj}
	ri, err := s.resourceFor(u)
	if err != nil {
		return err
	}
	body, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	_, err = ri.Patch(ctx, u.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{
		DryRun: []string{metav1.DryRunAll}, FieldManager: "rack-dry-run", FieldValidation: "Strict",
	})
	return err
}

// DryRunAll dry-runs every Kubernetes object among resources and returns one
// error naming each object the server refused. Namespaces go first and, once
// accepted, are created for real: the objects inside them could not be
// validated otherwise; objects that exist already are checked as server-side
// apply patches instead. Patches need their target to exist.
func (s *Server) DryRunAll(ctx context.Context, resources []Resource) (checked int, err error) {
	var objs []Resource
	for _, r := range resources {
		if IsKubernetesObject(r) {
			objs = append(objs, r)
		}
	}
	sort.SliceStable(objs, func(i, j int) bool {
		return objs[i].Type == "kubernetes:core/v1:Namespace" && objs[j].Type != "kubernetes:core/v1:Namespace"
	})
	var errs []error
	for _, r := range objs {
		obj := r.Object()
		var err error
		if isPatch(r) {
			err = s.DryRunApply(ctx, obj)
		} else if err = s.DryRun(ctx, obj); apierrors.IsAlreadyExists(err) {
			// A namespace an earlier run created: validate it as the
			// server-side apply pulumi-kubernetes would send.
			err = s.DryRunApply(ctx, obj)
		}
		if err == nil && r.Type == "kubernetes:core/v1:Namespace" {
			err = s.create(ctx, obj)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", r.Type, r.Name, err))
		}
		checked++
	}
	return checked, errors.Join(errs...)
}

func (s *Server) create(ctx context.Context, obj map[string]any) error {
	u := &unstructured.Unstructured{Object: obj}
	ri, err := s.resourceFor(u)
	if err != nil {
		return err
	}
	if _, err := ri.Create(ctx, u.DeepCopy(), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// Create creates obj for real (e.g. the Node a NodePatch patches).
func (s *Server) Create(ctx context.Context, obj map[string]any) error { return s.create(ctx, obj) }

func (s *Server) resourceFor(u *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := u.GroupVersionKind()
	if gvk.Kind == "" || gvk.Version == "" {
		return nil, fmt.Errorf("object %q has no apiVersion/kind", u.GetName())
	}
	m, err := s.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		// A CRD installed since the mapper last looked.
		s.mapper.Reset()
		m, err = s.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := u.GetNamespace()
		if ns == "" {
			return nil, fmt.Errorf("%s %q is namespaced but has no namespace", gvk.Kind, u.GetName())
		}
		return s.dyn.Resource(m.Resource).Namespace(ns), nil
	}
	return s.dyn.Resource(m.Resource), nil
}

// CRDFiles lists the files in dir matching pattern (filepath.Glob), failing
// when there are none.
func CRDFiles(dir, pattern string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, pattern))
	if err == nil && len(files) == 0 {
		err = fmt.Errorf("no CRDs match %s in %s", pattern, dir)
	}
	return files, err
}
