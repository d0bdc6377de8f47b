package catalog

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// channelsJSON is the channel server's answer, in its real shape (trimmed).
const channelsJSON = `{"type":"collection","links":{"self":"…/v1-release/channels"},"actions":{},"resourceType":"channels",
 "data":[
  {"id":"stable","type":"channel","links":{"self":"…/channels/stable"},"name":"stable","latest":"v1.36.6+k3s1"},
  {"id":"latest","type":"channel","links":{"self":"…/channels/latest"},"name":"latest","latest":"v1.38.0+k3s1"},
  {"id":"testing","type":"channel","links":{"self":"…/channels/testing"},"name":"testing","latest":"v1.38.1-rc1+k3s1"},
  {"id":"v1.36","type":"channel","links":{"self":"…/channels/v1.36"},"name":"v1.36","latest":"v1.36.6+k3s1"},
  {"id":"v1.35","type":"channel","links":{"self":"…/channels/v1.35"},"name":"v1.35","latest":"v1.35.6+k3s1"},
  {"id":"v1.38","type":"channel","links":{"self":"…/channels/v1.38"},"name":"v1.38","latest":"v1.38.0+k3s1"}
 ]}`

func channelServer(t *testing.T, body string, status int) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1-release/channels" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(s.Close)
	return s
}

func TestRefreshMergesAndCaches(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	srv := channelServer(t, channelsJSON, http.StatusOK)
	base := Embedded()
	at := MustDate("2026-12-02")
	c, added, err := Refresh(context.Background(), RefreshOptions{Base: base, URL: srv.URL + "/v1-release/channels", At: at})
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != 2 || added[0].String() != "v1.36.6+k3s1" || added[1].String() != "v1.38.0+k3s1" {
		t.Fatalf("added %v", added)
	}
	if c.Channels.Stable.String() != "v1.36.6+k3s1" || c.Channels.Latest.String() != "v1.38.0+k3s1" {
		t.Fatalf("channels %v", c.Channels)
	}
	if p, _ := c.NewestPatch("1.36"); p.String() != "v1.36.6+k3s1" {
		t.Fatalf("1.36 newest %s", p)
	}
	// A minor rack has no dates for is known, but never counted as supported.
	if m, ok := c.Lookup("1.38"); !ok || m.KnownDates() || c.SupportedAt("1.38", at) {
		t.Fatalf("1.38 after refresh: %+v", m)
	}
	if c.Contains(v("v1.38.1+k3s1")) {
		t.Fatal("a release candidate must not be merged as a release")
	}
	// The cache holds the result, and Open merges it with the embedded catalog.
	path, _ := CachePath()
	if !strings.HasPrefix(path, os.Getenv("XDG_CACHE_HOME")) || filepath.Base(path) != "catalog.yaml" {
		t.Fatalf("cache path %s", path)
	}
	opened, origin, err := Open("")
	if err != nil || origin.Warning != "" {
		t.Fatal(err, origin.Warning)
	}
	if !opened.Contains(v("v1.38.0+k3s1")) || opened.Channels.Stable.String() != "v1.36.6+k3s1" || !strings.Contains(origin.Description, "refreshed") {
		t.Fatalf("Open does not use the cache: %v %s", opened.Channels, origin.Description)
	}
	if opened.Generated != at || !opened.SupportedAt("1.35", at) {
		t.Fatalf("merged catalog lost facts: generated %s", opened.Generated)
	}
	// No temporary files are left beside the cache.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("cache folder holds %d files", len(entries))
	}
}

func TestRefreshOfflineKeepsCache(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	path, _ := CachePath()
	ok := channelServer(t, channelsJSON, http.StatusOK)
	if _, _, err := Refresh(context.Background(), RefreshOptions{Base: Embedded(), URL: ok.URL + "/v1-release/channels", At: MustDate("2026-12-01")}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)

	down := httptest.NewServer(http.NotFoundHandler())
	url := down.URL + "/v1-release/channels"
	down.Close() // connection refused: offline
	for name, u := range map[string]string{
		"offline":    url,
		"error page": channelServer(t, "oops", http.StatusBadGateway).URL + "/v1-release/channels",
		"not JSON":   channelServer(t, "<html>", http.StatusOK).URL + "/v1-release/channels",
		"empty":      channelServer(t, `{"data":[]}`, http.StatusOK).URL + "/v1-release/channels",
	} {
		_, _, err := Refresh(context.Background(), RefreshOptions{Base: Embedded(), URL: u, At: MustDate("2026-12-02")})
		if err == nil || !strings.Contains(err.Error(), "not refreshed") || !strings.Contains(err.Error(), path+" is unchanged") {
			t.Errorf("%s: %v", name, err)
		}
		after, _ := os.ReadFile(path)
		if !bytes.Equal(before, after) {
			t.Errorf("%s: the cache changed", name)
		}
	}
}

func TestOpen(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	c, origin, err := Open("")
	if err != nil || origin.Description != "embedded (generated 2026-12-02)" || !c.Contains(v("v1.33.5+k3s1")) {
		t.Fatalf("no cache: %v %+v", err, origin)
	}
	// A broken cache is set aside with a warning.
	path, _ := CachePath()
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.WriteFile(path, []byte("minors: [oops"), 0o644)
	c, origin, err = Open("")
	if err != nil || c == nil || !strings.Contains(origin.Warning, "ignoring the refreshed catalog") {
		t.Fatalf("broken cache: %v %+v", err, origin)
	}
	// --catalog FILE is used alone.
	file := filepath.Join(t.TempDir(), "mine.yaml")
	os.WriteFile(file, []byte("generated: 2026-01-01\nchannels: {stable: v1.33.5+k3s1}\nminors:\n  - {minor: \"1.33\", released: 2025-04-23, eol: 2026-06-28, patches: [v1.33.5+k3s1]}\n"), 0o644)
	c, origin, err = Open(file)
	if err != nil || len(c.Minors) != 1 || !strings.HasPrefix(origin.Description, file) {
		t.Fatalf("--catalog: %v %+v", err, origin)
	}
	if _, _, err := Open(filepath.Join(t.TempDir(), "none.yaml")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing --catalog: %v", err)
	}
}

func TestMerge(t *testing.T) {
	a, _ := Parse("a", []byte("generated: 2026-01-01\nchannels: {stable: v1.33.5+k3s1}\nminors:\n  - {minor: \"1.33\", released: 2025-04-23, eol: 2026-06-28, patches: [v1.33.5+k3s1]}\n"))
	b, _ := Parse("b", []byte("generated: 2026-02-01\nchannels: {stable: v1.33.6+k3s1}\nminors:\n  - {minor: \"1.33\", patches: [v1.33.6+k3s1]}\n  - {minor: \"1.34\", patches: [v1.34.1+k3s1]}\n"))
	m := Merge(a, b)
	if m.Generated.String() != "2026-02-01" || m.Channels.Stable.String() != "v1.33.6+k3s1" || m.Minors[0].Minor != "1.34" {
		t.Fatalf("merge: %+v", m)
	}
	if mm, _ := m.Lookup("1.33"); len(mm.Patches) != 2 || !mm.KnownDates() {
		t.Fatalf("1.33 after merge: %+v", mm)
	}
	// An older b leaves a's channels alone.
	if m := Merge(b, a); m.Channels.Stable.String() != "v1.33.6+k3s1" {
		t.Fatalf("older catalog won the channels: %v", m.Channels)
	}
	if a.Channels.Stable.String() != "v1.33.5+k3s1" || len(a.Minors[0].Patches) != 1 {
		t.Fatal("Merge changed its input")
	}
}
