package apps

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/homelab/rack/internal/atomicfile"
	"github.com/homelab/rack/inventory"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Argo CD settings of the child Applications. The argocd addon installs
// Argo CD in ArgoNamespace (addons/argocd.DefaultNamespace; not imported:
// apps stays free of Pulumi).
const (
	ArgoNamespace = "argocd"
	ArgoFinalizer = "resources-finalizer.argocd.argoproj.io"
	argoInCluster = "https://kubernetes.default.svc"
	// DefaultRepoPath is where rack render writes when the inventory has no
	// addons.argocd.
	DefaultRepoPath = "apps"
)

// Header starts every file rack render writes; WriteRepo only ever
// removes files that start with it.
const Header = "# Written by rack render: change the inventory and run rack render, do not edit.\n"

// ExampleSuffix marks files Argo CD does not apply (it reads .yaml, .yml
// and .json only): the placeholder Secrets, to be sealed by the user.
const ExampleSuffix = ".example"

// RepoApp is one app to render into the GitOps repository.
type RepoApp struct {
	App     inventory.App
	Release Release
	// SecretEnv: see Options.SecretEnv.
	SecretEnv []string
}

// RepoOptions say where the files go and what the child Applications sync.
type RepoOptions struct {
	// Path is the root app-of-apps folder in the repository
	// (addons.argocd.path; default DefaultRepoPath).
	Path string
	// RepoURL and Revision are what the child Applications sync; with no
	// RepoURL, no Applications are written (no Argo CD in the inventory).
	RepoURL, Revision string
	// Namespace holds the apps (default DefaultNamespace).
	Namespace string
}

// File is one file of the repository, by its slash-separated path.
type File struct {
	Path string
	Data []byte
}

// RenderRepo renders every app in its release state into repository files:
// <path>/<app>/<kind>-<name>.yaml per object, <path>/<app>.yaml the child
// Application syncing that folder (the root Application syncs <path>, not
// recursively), and for an app with secret env,
// <path>/<app>/secret-<app>-env.yaml.example, a placeholder Argo CD does
// not apply. It is pure, like Render, and returns the files sorted by path.
func RenderRepo(list []RepoApp, opts RepoOptions) ([]File, error) {
	root := opts.Path
	if root == "" {
		root = DefaultRepoPath
	}
	root = path.Clean(strings.TrimPrefix(filepath.ToSlash(root), "/"))
	var files []File
	var errs []error
	for _, ra := range list {
		objs, err := Render(ra.App, ra.Release, Options{Namespace: opts.Namespace, SecretEnv: ra.SecretEnv})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		dir := path.Join(root, ra.App.Name)
		for _, o := range objs {
			name := path.Join(dir, strings.ToLower(o.GetKind())+"-"+o.GetName()+".yaml")
			data, err := yaml.Marshal(o.Object)
			if err != nil {
				return nil, err
			}
			head := Header
			if IsSecret(o) {
				name += ExampleSuffix
				head += sealAdvice(o, opts)
			}
			files = append(files, File{Path: name, Data: append([]byte(head), data...)})
		}
		if opts.RepoURL != "" {
			data, err := yaml.Marshal(childApp(ra.App, dir, opts).Object)
			if err != nil {
				return nil, err
			}
			files = append(files, File{Path: dir + ".yaml", Data: append([]byte(Header), data...)})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, nil
}

// sealAdvice is the comment on a placeholder Secret.
func sealAdvice(o *unstructured.Unstructured, opts RepoOptions) string {
	keys, _, _ := unstructured.NestedStringMap(o.Object, "stringData")
	var names []string
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	var lits []string
	for _, k := range names {
		lits = append(lits, fmt.Sprintf("--from-literal=%s=\"$%s\"", k, envHint(k)))
	}
	ns := opts.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	return fmt.Sprintf(`# A placeholder: the real values come from your environment and must never
# be committed in plain text, so Argo CD does not apply this file. Seal them
# (Sealed Secrets), and commit the sealed file beside this one, each $NAME
# being the environment variable the inventory's ${NAME} names:
#
#   kubectl create secret generic %s -n %s %s \
#     --dry-run=client -o yaml | kubeseal -o yaml > %s-sealed.yaml
#
# or create the Secret in the cluster yourself with the same command,
# without --dry-run and kubeseal.
`, o.GetName(), ns, strings.Join(lits, " "), o.GetName())
}

// envHint names an environment variable for an env key in the advice.
func envHint(key string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			return r
		}
		return '_'
	}, key)
}

// childApp is the Argo CD Application that syncs one app's folder.
func childApp(app inventory.App, dir string, opts RepoOptions) *unstructured.Unstructured {
	ns := opts.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	rev := opts.Revision
	if rev == "" {
		rev = "HEAD"
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "argoproj.io/v1alpha1",
		"kind":       "Application",
		"metadata": map[string]any{
			"name":       app.Name,
			"namespace":  ArgoNamespace,
			"finalizers": []any{ArgoFinalizer},
			"labels":     map[string]any{LabelName: app.Name, LabelManagedBy: ManagedBy},
		},
		"spec": map[string]any{
			"project":     "default",
			"source":      map[string]any{"repoURL": opts.RepoURL, "targetRevision": rev, "path": dir},
			"destination": map[string]any{"server": argoInCluster, "namespace": ns},
			"syncPolicy": map[string]any{
				"automated":   map[string]any{"prune": true, "selfHeal": true},
				"syncOptions": []any{"CreateNamespace=true", "ServerSideApply=true"},
			},
		},
	}}
}

// ReadRepoObjects reads back the objects of files rack render wrote under
// dir (the placeholder Secrets included), in no particular order.
func ReadRepoObjects(dir string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil || !bytes.HasPrefix(data, []byte(Header)) {
			return err
		}
		var m map[string]any
		if err := yaml.Unmarshal(data, &m); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, &unstructured.Unstructured{Object: m})
		return nil
	})
	return out, err
}

// WriteRepo writes files under dir and removes every file rack render wrote
// before under the same root folder that files no longer has (an object or
// app gone), and the folders that leaves empty. Files without Header are
// never touched. It returns the paths written or removed (slash-separated,
// relative to dir), sorted.
func WriteRepo(dir, root string, files []File) ([]string, error) {
	if root == "" {
		root = DefaultRepoPath
	}
	root = path.Clean(strings.TrimPrefix(filepath.ToSlash(root), "/"))
	want := map[string]bool{}
	var changed []string
	for _, f := range files {
		want[f.Path] = true
		full := filepath.Join(dir, filepath.FromSlash(f.Path))
		if old, err := os.ReadFile(full); err == nil && bytes.Equal(old, f.Data) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return nil, err
		}
		if err := atomicfile.Write(full, f.Data, 0o644); err != nil {
			return nil, err
		}
		changed = append(changed, f.Path)
	}
	base := filepath.Join(dir, filepath.FromSlash(root))
	var dirs []string
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if d.Name() == ".git" {
				return filepath.SkipDir
			}
			dirs = append(dirs, p)
			return nil
		}
		if want[rel] {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil || !bytes.HasPrefix(data, []byte(Header)) {
			return err
		}
		if err := os.Remove(p); err != nil {
			return err
		}
		changed = append(changed, rel)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Deepest first; the root itself stays.
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		if d != base {
			_ = os.Remove(d) // fails, as it should, when something else lives there
		}
	}
	sort.Strings(changed)
	return changed, nil
}
