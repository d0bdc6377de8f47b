package images

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readLayout returns the files of an OCI layout tar by name.
func readLayout(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = b
	}
}

func blob(t *testing.T, files map[string][]byte, digest string) []byte {
	t.Helper()
	b, ok := files["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")]
	if !ok {
		t.Fatalf("blob %s missing", digest)
	}
	sum := sha256.Sum256(b)
	if "sha256:"+hex.EncodeToString(sum[:]) != digest {
		t.Fatalf("blob %s has another digest", digest)
	}
	return b
}

func TestWriteOCIIsAValidDeterministicLayout(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "app")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := Image{Ref: "docker.io/homelab/app:v1", Entrypoint: []string{"/app"}, Env: []string{"A=b"},
		Files: []File{{Path: "/usr/bin/app", Source: bin}}}
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	if err := img.WriteOCI(a); err != nil {
		t.Fatal(err)
	}
	if err := img.WriteOCI(b); err != nil {
		t.Fatal(err)
	}
	da, _ := ManifestDigest(a)
	db, _ := ManifestDigest(b)
	if da == "" || da != db {
		t.Errorf("digests %q and %q: want the same, non-empty", da, db)
	}

	files := readLayout(t, a)
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", files["oci-layout"])
	}
	var index struct {
		Manifests []descriptor
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, files["index.json"])
	}
	if got := index.Manifests[0].Annotations["io.containerd.image.name"]; got != img.Ref {
		t.Errorf("image name annotation %q, want %q", got, img.Ref)
	}
	var manifest struct {
		Config descriptor
		Layers []descriptor
	}
	if err := json.Unmarshal(blob(t, files, index.Manifests[0].Digest), &manifest); err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Config struct {
			Entrypoint []string
			Env        []string
		}
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		}
	}
	if err := json.Unmarshal(blob(t, files, manifest.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Config.Entrypoint[0] != "/app" || cfg.Config.Env[len(cfg.Config.Env)-1] != "A=b" {
		t.Errorf("config %+v", cfg.Config)
	}
	if len(manifest.Layers) != 1 || cfg.RootFS.DiffIDs[0] != manifest.Layers[0].Digest {
		t.Fatalf("layers %+v, diff ids %v: want one uncompressed layer", manifest.Layers, cfg.RootFS.DiffIDs)
	}
	// The layer holds the file (and its parents) and the base files.
	tr := tar.NewReader(strings.NewReader(string(blob(t, files, manifest.Layers[0].Digest))))
	names := map[string]int64{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names[h.Name] = h.Mode
	}
	for name, mode := range map[string]int64{"usr/": 0o755, "usr/bin/": 0o755, "usr/bin/app": 0o755, "etc/passwd": 0o644, "tmp/": 0o1777} {
		if got, ok := names[name]; !ok || got != mode {
			t.Errorf("layer entry %s: present %v, mode %o, want %o", name, ok, got, mode)
		}
	}
}

func TestRefsMustBeFullyQualified(t *testing.T) {
	if err := (Image{Ref: "traefik:v3"}).WriteOCI(filepath.Join(t.TempDir(), "x.tar")); err == nil {
		t.Error("a short reference was accepted: the CRI would look for docker.io/library/…")
	}
}
