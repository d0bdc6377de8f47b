package k3s

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// release serves a fake k3s release the way GitHub lays it out, on loopback.
func release(t *testing.T, assets map[string][]byte, sums map[string]string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		// The version's "+" arrives escaped, as on GitHub.
		prefix := "/v1.33.5%2Bk3s1/"
		if !strings.HasPrefix(r.URL.RawPath, prefix) && !strings.HasPrefix(r.URL.Path, "/v1.33.5+k3s1/") {
			http.NotFound(w, r)
			return
		}
		name := filepath.Base(r.URL.Path)
		if body, ok := assets[name]; ok {
			w.Write(body)
			return
		}
		if s, ok := sums[name]; ok {
			fmt.Fprint(w, s)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func hexSum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestBinaryDownloadVerifiedAndCached(t *testing.T) {
	bin := []byte("#!/bin/sh\necho k3s arm64\n")
	srv, hits := release(t, map[string][]byte{"k3s-arm64": bin},
		map[string]string{"sha256sum-arm64.txt": hexSum(bin) + "  k3s-arm64\n" + hexSum([]byte("x")) + "  k3s-airgap-images-arm64.tar\n"})
	b := Binaries{CacheDir: t.TempDir(), ReleaseURL: srv.URL}
	a, err := b.Binary(context.Background(), "v1.33.5+k3s1", "arm64")
	if err != nil {
		t.Fatal(err)
	}
	if a.SHA256 != hexSum(bin) || a.Size != int64(len(bin)) {
		t.Fatalf("artifact %+v", a)
	}
	if got, _ := os.ReadFile(a.Path); string(got) != string(bin) {
		t.Fatal("cached file differs")
	}
	if st, _ := os.Stat(a.Path); st.Mode().Perm() != 0o755 {
		t.Fatalf("mode %v", st.Mode())
	}
	before := hits.Load()
	if _, err := b.Binary(context.Background(), "v1.33.5+k3s1", "arm64"); err != nil {
		t.Fatal(err)
	}
	if hits.Load() != before {
		t.Fatal("a cached binary was downloaded again")
	}
	// A damaged cache is refused, never uploaded.
	os.WriteFile(a.Path, []byte("tampered"), 0o755)
	if _, err := b.Binary(context.Background(), "v1.33.5+k3s1", "arm64"); err == nil || !strings.Contains(err.Error(), "is damaged") {
		t.Fatalf("damaged cache: %v", err)
	}
}

func TestBinaryChecksumMismatchRefused(t *testing.T) {
	srv, _ := release(t, map[string][]byte{"k3s": []byte("evil")},
		map[string]string{"sha256sum-amd64.txt": hexSum([]byte("good")) + "  k3s\n"})
	dir := t.TempDir()
	b := Binaries{CacheDir: dir, ReleaseURL: srv.URL}
	_, err := b.Binary(context.Background(), "v1.33.5+k3s1", "amd64")
	if err == nil || !strings.Contains(err.Error(), "refusing it") {
		t.Fatalf("want a checksum refusal, got %v", err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, "v1.33.5+k3s1", "amd64", "*"))
	hidden, _ := filepath.Glob(filepath.Join(dir, "v1.33.5+k3s1", "amd64", ".*"))
	if len(leftovers)+len(hidden) != 0 {
		t.Fatalf("a refused download left files: %v %v", leftovers, hidden)
	}
}

func TestBinaryOfflineSaysWhatToDo(t *testing.T) {
	srv, _ := release(t, nil, nil)
	b := Binaries{CacheDir: t.TempDir(), ReleaseURL: srv.URL}
	_, err := b.Binary(context.Background(), "v1.33.5+k3s1", "amd64")
	if err == nil || !strings.Contains(err.Error(), "set cluster.k3s.airgap") {
		t.Fatalf("got %v", err)
	}
	if _, err := b.Binary(context.Background(), "v1.33.5+k3s1", "riscv64"); err == nil || !strings.Contains(err.Error(), "no binary for arch") {
		t.Fatalf("got %v", err)
	}
}

func TestAirgapFolder(t *testing.T) {
	dir := t.TempDir()
	bin := []byte("k3s amd64")
	os.WriteFile(filepath.Join(dir, "k3s"), bin, 0o755)
	os.WriteFile(filepath.Join(dir, "k3s-airgap-images-amd64.tar.zst"), []byte("img"), 0o644)
	os.WriteFile(filepath.Join(dir, "k3s-airgap-images-arm64.tar.zst"), []byte("img"), 0o644)
	os.MkdirAll(filepath.Join(dir, "arm64"), 0o755)
	os.WriteFile(filepath.Join(dir, "arm64", "k3s"), []byte("k3s arm64"), 0o755)
	os.WriteFile(filepath.Join(dir, "sha256sum-amd64.txt"), []byte(hexSum(bin)+"  k3s\n"), 0o644)
	b := Binaries{CacheDir: t.TempDir(), Airgap: dir, ReleaseURL: "http://127.0.0.1:1"}
	a, err := b.Binary(context.Background(), "v1.33.5+k3s1", "amd64")
	if err != nil || a.SHA256 != hexSum(bin) {
		t.Fatalf("amd64: %+v %v", a, err)
	}
	// A binary without the release's checksum file is refused, not trusted.
	if _, err := b.Binary(context.Background(), "v1.33.5+k3s1", "arm64"); err == nil || !strings.Contains(err.Error(), "sha256sum-arm64.txt") {
		t.Fatalf("arm64 without its checksum file: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "arm64", "sha256sum-arm64.txt"), []byte(hexSum([]byte("k3s arm64"))+"  k3s-arm64\n"), 0o644)
	if a, err := b.Binary(context.Background(), "v1.33.5+k3s1", "arm64"); err != nil || a.Path != filepath.Join(dir, "arm64", "k3s") {
		t.Fatalf("arm64 per-arch folder: %+v %v", a, err)
	}
	imgs, _ := b.AirgapImages("amd64")
	if len(imgs) != 1 || !strings.HasSuffix(imgs[0], "images-amd64.tar.zst") {
		t.Fatalf("images for amd64: %v", imgs)
	}
	os.WriteFile(filepath.Join(dir, "k3s"), []byte("corrupt"), 0o755)
	if _, err := b.Binary(context.Background(), "v1.33.5+k3s1", "amd64"); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("corrupt airgap binary: %v", err)
	}
	if _, err := b.Binary(context.Background(), "v1.33.5+k3s1", "arm"); err == nil || !strings.Contains(err.Error(), "k3s-armhf") {
		t.Fatalf("missing arch: %v", err)
	}
}

// Planning needs the binary's checksum only: the release's small checksum
// file is read, the binary is not downloaded, and nothing is written.
func TestChecksumDownloadsNothing(t *testing.T) {
	bin := []byte("#!/bin/sh\necho k3s amd64\n")
	srv, hits := release(t, map[string][]byte{"k3s": bin}, map[string]string{"sha256sum-amd64.txt": hexSum(bin) + "  k3s\n"})
	cache := t.TempDir()
	b := Binaries{CacheDir: cache, ReleaseURL: srv.URL}
	sum, cached, err := b.Checksum(context.Background(), "v1.33.5+k3s1", "amd64")
	if err != nil || sum != hexSum(bin) || cached {
		t.Fatalf("checksum %q cached=%v %v", sum, cached, err)
	}
	if hits.Load() != 1 {
		t.Fatalf("%d requests, want 1 (the checksum file only)", hits.Load())
	}
	if ents, _ := os.ReadDir(cache); len(ents) != 0 {
		t.Fatalf("planning wrote into the cache: %v", ents)
	}
}
