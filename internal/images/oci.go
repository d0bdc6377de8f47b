// Package images builds the test rack's container images from Go binaries
// built on this machine (nothing is ever pulled) and imports them into a
// node's containerd under the fully qualified names the upstream charts
// reference, so the charts deploy unchanged with imagePullPolicy
// IfNotPresent.
//
// An image is one uncompressed layer (the binaries plus the few files a
// distroless base brings: /etc/passwd, /etc/group, /tmp) with an OCI config
// and manifest, in an OCI image layout tar that `ctr images import` reads.
// Everything is deterministic (fixed times, sorted entries), so the same
// binaries give the same digests and a re-import is a no-op.
package images

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Image describes one image to build.
type Image struct {
	// Ref is the fully qualified reference the image is imported under,
	// e.g. "registry.k8s.io/pause:3.6" or "docker.io/library/traefik:v3.6.15":
	// the CRI normalises what a pod spec says ("traefik:v3.6.15") to that.
	Ref        string
	Entrypoint []string
	Cmd        []string
	// Env is added after PATH.
	Env          []string
	User         string
	WorkingDir   string
	ExposedPorts []string // "8080/tcp"
	Labels       map[string]string
	// Files go into the layer besides the base files.
	Files []File
}

// File is one file of the layer: its content comes from Source (a path on
// this machine) or Data.
type File struct {
	Path   string // absolute, inside the image
	Source string
	Data   []byte
	Mode   os.FileMode // default 0755 for Source, 0644 for Data
}

// epoch is every entry's modification time: a fixed time keeps digests
// stable across builds.
var epoch = time.Unix(0, 0).UTC()

// basePasswd mirrors distroless/static: root, nobody and the "nonroot"
// user (65532) that many charts run as.
const basePasswd = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
const baseGroup = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Media types of an OCI image with an uncompressed layer.
const (
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// layer writes the image's filesystem as a tar into w and returns its
// digest ("sha256:…", which is also the diff ID: the layer is uncompressed).
func (img Image) layer(w io.Writer) (string, int64, error) {
	type entry struct {
		hdr *tar.Header
		src string
		buf []byte
	}
	entries := map[string]*entry{}
	dir := func(p string, mode int64) {
		entries[p] = &entry{hdr: &tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: mode}}
	}
	var addParents func(p string)
	addParents = func(p string) {
		parent := path.Dir(p)
		if parent == "/" || parent == "." {
			return
		}
		if _, ok := entries[parent]; !ok {
			dir(parent, 0o755)
		}
		addParents(parent)
	}
	// The directories runc mounts over or writes to, as in a distroless base.
	for _, d := range []string{"/etc", "/dev", "/proc", "/sys", "/var", "/home", "/root"} {
		dir(d, 0o755)
	}
	dir("/tmp", 0o1777)
	dir("/home/nonroot", 0o700)
	entries["/home/nonroot"].hdr.Uid, entries["/home/nonroot"].hdr.Gid = 65532, 65532
	files := append([]File{
		{Path: "/etc/passwd", Data: []byte(basePasswd)},
		{Path: "/etc/group", Data: []byte(baseGroup)},
		{Path: "/etc/nsswitch.conf", Data: []byte("hosts: files dns\n")},
	}, img.Files...)
	for _, f := range files {
		if !path.IsAbs(f.Path) {
			return "", 0, fmt.Errorf("image %s: file path %q is not absolute", img.Ref, f.Path)
		}
		p := path.Clean(f.Path)
		e := &entry{hdr: &tar.Header{Typeflag: tar.TypeReg, Name: p}, buf: f.Data, src: f.Source}
		mode := f.Mode
		if f.Source != "" {
			st, err := os.Stat(f.Source)
			if err != nil {
				return "", 0, err
			}
			e.hdr.Size = st.Size()
			if mode == 0 {
				mode = 0o755
			}
		} else {
			e.hdr.Size = int64(len(f.Data))
			if mode == 0 {
				mode = 0o644
			}
		}
		e.hdr.Mode = int64(mode.Perm())
		entries[p] = e
		addParents(p)
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names) // parents sort before their children
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, h)}
	tw := tar.NewWriter(cw)
	for _, n := range names {
		e := entries[n]
		// Paths in layer tars are relative to the root.
		e.hdr.Name = strings.TrimPrefix(e.hdr.Name, "/")
		e.hdr.ModTime, e.hdr.Format = epoch, tar.FormatPAX
		if err := tw.WriteHeader(e.hdr); err != nil {
			return "", 0, err
		}
		switch {
		case e.src != "":
			f, err := os.Open(e.src)
			if err != nil {
				return "", 0, err
			}
			n, err := io.Copy(tw, f)
			f.Close()
			if err != nil {
				return "", 0, err
			}
			if n != e.hdr.Size {
				return "", 0, fmt.Errorf("%s changed while being read", e.src)
			}
		case len(e.buf) > 0:
			if _, err := tw.Write(e.buf); err != nil {
				return "", 0, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return "", 0, err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// WriteOCI writes the image as an OCI image layout tar to path, through a
// temporary file renamed into place, so readers never see half an image.
func (img Image) WriteOCI(dst string) (err error) {
	if img.Ref == "" || !strings.Contains(img.Ref, "/") || !strings.Contains(path.Base(img.Ref), ":") {
		return fmt.Errorf("image reference %q is not fully qualified (registry/repository:tag)", img.Ref)
	}
	tmpDir, err := os.MkdirTemp(filepath.Dir(dst), ".oci-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmpDir)
	// The layer goes to a file first: its digest names it inside the tar.
	layerPath := filepath.Join(tmpDir, "layer.tar")
	lf, err := os.Create(layerPath)
	if err != nil {
		return err
	}
	layerDigest, layerSize, err := img.layer(lf)
	if cerr := lf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}

	exposed := map[string]struct{}{}
	for _, p := range img.ExposedPorts {
		exposed[p] = struct{}{}
	}
	cfg := map[string]any{
		"created":      epoch.Format(time.RFC3339),
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config": map[string]any{
			"Entrypoint":   img.Entrypoint,
			"Cmd":          img.Cmd,
			"Env":          append([]string{defaultPath}, img.Env...),
			"User":         img.User,
			"WorkingDir":   img.WorkingDir,
			"ExposedPorts": exposed,
			"Labels":       img.Labels,
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
		"history": []map[string]any{{"created": epoch.Format(time.RFC3339), "created_by": "rack internal/images"}},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        descriptor{MediaType: mediaConfig, Digest: digestOf(cfgJSON), Size: int64(len(cfgJSON))},
		"layers":        []descriptor{{MediaType: mediaLayer, Digest: layerDigest, Size: layerSize}},
	})
	if err != nil {
		return err
	}
	tag := img.Ref[strings.LastIndex(img.Ref, ":")+1:]
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaIndex,
		"manifests": []descriptor{{
			MediaType: mediaManifest, Digest: digestOf(manifest), Size: int64(len(manifest)),
			// ctr import names the image after io.containerd.image.name;
			// other tools read the OCI ref name.
			Annotations: map[string]string{"io.containerd.image.name": img.Ref, "org.opencontainers.image.ref.name": tag},
			Platform:    &platform{Architecture: runtime.GOARCH, OS: "linux"},
		}},
	})
	if err != nil {
		return err
	}

	tmp := filepath.Join(tmpDir, "image.tar")
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer out.Close()
	tw := tar.NewWriter(out)
	blob := func(name string, data []byte, src string, size int64) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: epoch}); err != nil {
			return err
		}
		if src == "" {
			_, err := tw.Write(data)
			return err
		}
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	}
	hexOf := func(d string) string { return strings.TrimPrefix(d, "sha256:") }
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	steps := []error{
		blob("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`), "", int64(len(`{"imageLayoutVersion":"1.0.0"}`))),
		blob("blobs/sha256/"+hexOf(layerDigest), nil, layerPath, layerSize),
		blob("blobs/sha256/"+hexOf(digestOf(cfgJSON)), cfgJSON, "", int64(len(cfgJSON))),
		blob("blobs/sha256/"+hexOf(digestOf(manifest)), manifest, "", int64(len(manifest))),
		blob("index.json", index, "", int64(len(index))),
	}
	if err := errors.Join(steps...); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// ManifestDigest reads the digest of the single manifest in an OCI layout
// tar written by WriteOCI: what containerd reports as the image's digest.
func ManifestDigest(ociTar string) (string, error) {
	f, err := os.Open(ociTar)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			return "", fmt.Errorf("%s: no index.json: %w", ociTar, err)
		}
		if h.Name != "index.json" {
			continue
		}
		var idx struct{ Manifests []descriptor }
		if err := json.NewDecoder(tr).Decode(&idx); err != nil {
			return "", err
		}
		if len(idx.Manifests) != 1 {
			return "", fmt.Errorf("%s: %d manifests, want 1", ociTar, len(idx.Manifests))
		}
		return idx.Manifests[0].Digest, nil
	}
}
