package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homelab/rack/inventory"
)

// noCache points the refresh cache at an empty folder, so tests never read
// (or write) the user's ~/.cache/rack.
func noCache(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", dir)
	return filepath.Join(dir, "rack", "catalog.yaml")
}

func TestVersionsTable(t *testing.T) {
	noCache(t)
	out, errOut, code := rack(t, nil, "versions", "--at", "2026-12-02")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"k3s version catalog: embedded (generated 2026-12-02); support window at 2026-12-02",
		"MINOR  RELEASED    EOL         SUPPORTED  DAYS LEFT  NEWEST PATCH   CHANNELS",
		"1.37   2026-08-26  2027-10-28  yes        330        v1.37.1+k3s1   latest v1.37.1+k3s1",
		"1.36   2026-04-22  2027-06-28  yes        208        v1.36.5+k3s1   stable v1.36.3+k3s1",
		"1.35   2025-12-17  2027-02-28  yes        88         v1.35.6+k3s1   -",
		"1.34   2025-08-27  2026-10-27  no         -          v1.34.9+k3s1   -",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Under 60 days left is called out.
	out, _, _ = rack(t, nil, "versions", "--at", "2027-01-15")
	if !strings.Contains(out, "1.35   2025-12-17  2027-02-28  yes (ends soon)  44") {
		t.Errorf("no end-of-life warning:\n%s", out)
	}
}

func TestVersionsJSON(t *testing.T) {
	noCache(t)
	out, _, code := rack(t, nil, "-o", "json", "versions", "--at", "2026-12-02")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	var r struct {
		At       string
		Channels map[string]string
		Minors   []map[string]any
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if r.At != "2026-12-02" || r.Channels["stable"] != "v1.36.3+k3s1" || r.Channels["latest"] != "v1.37.1+k3s1" {
		t.Fatalf("header: %+v", r)
	}
	var m135 map[string]any
	for _, m := range r.Minors {
		for _, key := range []string{"minor", "released", "eol", "supported", "daysLeft", "newestPatch", "channels", "patches"} {
			if _, ok := m[key]; !ok {
				t.Fatalf("minor lacks %q: %v", key, m)
			}
		}
		if m["minor"] == "1.35" {
			m135 = m
		}
	}
	if m135 == nil || m135["supported"] != true || m135["daysLeft"] != 88.0 || m135["newestPatch"] != "v1.35.6+k3s1" {
		t.Fatalf("1.35: %v", m135)
	}
}

func TestVersionsUsage(t *testing.T) {
	noCache(t)
	_, errOut, code := rack(t, nil, "versions", "--at", "02/12/2026")
	if code != exitUsage || !strings.Contains(errOut, "YYYY-MM-DD") {
		t.Fatalf("bad --at: exit %d %s", code, errOut)
	}
	_, errOut, code = rack(t, nil, "versions", "--catalog", filepath.Join(t.TempDir(), "none.yaml"))
	if code != exitFailed || !strings.Contains(errOut, "does not exist") {
		t.Fatalf("missing --catalog: exit %d %s", code, errOut)
	}
}

func TestVersionsCatalogFile(t *testing.T) {
	noCache(t)
	file := filepath.Join(t.TempDir(), "mine.yaml")
	os.WriteFile(file, []byte("generated: 2026-01-01\nchannels: {stable: v1.33.5+k3s1}\nminors:\n  - {minor: \"1.33\", released: 2025-04-23, eol: 2026-06-28, patches: [v1.33.5+k3s1]}\n"), 0o600)
	out, _, code := rack(t, nil, "versions", "--catalog", file, "--at", "2026-01-01")
	if code != exitOK || !strings.Contains(out, file+" (generated 2026-01-01)") || strings.Contains(out, "1.34") {
		t.Fatalf("--catalog FILE not used alone: exit %d\n%s", code, out)
	}
	// RACK_CATALOG works like every flag.
	out, _, _ = rack(t, map[string]string{"RACK_CATALOG": file}, "versions")
	if !strings.Contains(out, file) {
		t.Fatalf("RACK_CATALOG ignored:\n%s", out)
	}
}

func TestVersionsRefresh(t *testing.T) {
	cache := noCache(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"data":[{"id":"stable","name":"stable","latest":"v1.36.6+k3s1"},{"id":"latest","name":"latest","latest":"v1.37.2+k3s1"},{"id":"testing","name":"testing","latest":"v1.38.0-rc1+k3s1"}]}`))
	}))
	defer srv.Close()
	out, errOut, code := rack(t, nil, "versions", "--refresh", "--channel-server", srv.URL, "--at", "2026-12-02")
	if code != exitOK || !strings.Contains(out, "new v1.36.6+k3s1, v1.37.2+k3s1") || !strings.Contains(out, "stable v1.36.6+k3s1") {
		t.Fatalf("refresh: exit %d %s\n%s", code, errOut, out)
	}
	before, err := os.ReadFile(cache)
	if err != nil {
		t.Fatalf("no cache written: %v", err)
	}
	// Later runs use the cache without asking the server.
	out, _, _ = rack(t, nil, "versions", "--at", "2026-12-02")
	if !strings.Contains(out, "v1.37.2+k3s1") || !strings.Contains(out, "refreshed") {
		t.Fatalf("cache not used:\n%s", out)
	}
	// Offline: a clear error, exit 1, the cache as it was.
	srv.Close()
	_, errOut, code = rack(t, nil, "versions", "--refresh", "--channel-server", srv.URL)
	after, _ := os.ReadFile(cache)
	if code != exitFailed || !strings.Contains(errOut, "cannot reach the k3s channel server") || !strings.Contains(errOut, "is unchanged") || string(before) != string(after) {
		t.Fatalf("offline refresh: exit %d %s", code, errOut)
	}
}

func TestVersionPrintsK3sVersions(t *testing.T) {
	noCache(t)
	out, _, code := rack(t, nil, "version")
	if code != exitOK || !strings.Contains(out, "k3s versions: ") || !strings.Contains(out, "1.25 … 1.37") ||
		!strings.Contains(out, "stable v1.36.3+k3s1, latest v1.37.1+k3s1") || !strings.Contains(out, "v1.35.6+k3s1") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	out, _, _ = rack(t, nil, "-o", "json", "version")
	var info versionInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.K3s) < 180 || info.K3s[0] != "v1.37.1+k3s1" || info.Catalog == nil {
		t.Fatalf("json: %v %s", err, out)
	}
}

func TestUpgradePlanOffline(t *testing.T) {
	noCache(t)
	out, errOut, code := rack(t, nil, "upgrade", "plan", "--from", "v1.33.5+k3s1", "--at", "2026-12-02")
	if code != exitOK {
		t.Fatalf("exit %d %s", code, errOut)
	}
	for _, want := range []string{"k3s v1.33.5+k3s1 → v1.36.3+k3s1, 3 step(s)", " 1. v1.34.9+k3s1  every node", " 3. v1.36.3+k3s1"} {
		if !strings.Contains(out, want) {
			t.Errorf("lacks %q:\n%s", want, out)
		}
	}
	out, _, code = rack(t, nil, "-o", "json", "upgrade", "plan", "--from", "v1.33.5+k3s1", "--to", "v1.35", "--at", "2026-12-02")
	var p struct {
		From, To string
		Steps    []struct {
			Version string
			Nodes   []string
		}
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil || code != exitOK || p.To != "v1.35.6+k3s1" || len(p.Steps) != 2 || p.Steps[0].Nodes == nil {
		t.Fatalf("json: exit %d %v\n%s", code, err, out)
	}
	_, errOut, code = rack(t, nil, "upgrade", "plan", "--from", "v1.33.5+k3s1", "--to", "v1.34", "--at", "2026-12-02")
	if code != exitFailed || !strings.Contains(errOut, "k3s 1.34 is not supported at 2026-12-02 (end of life 2026-10-27)") || !strings.Contains(errOut, "1.37, 1.36, 1.35") {
		t.Fatalf("EOL target: exit %d %s", code, errOut)
	}
}

const clusterInventory = `cluster: {name: lab, k3s: {version: v1.33.5+k3s1}}
nodes:
  - {name: s1, address: 10.0.0.1, role: server}
  - {name: a1, address: 10.0.0.2, role: agent}
`

func TestUpgradePlanReadsTheCluster(t *testing.T) {
	noCache(t)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/nodes" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"kind":"NodeList","apiVersion":"v1","items":[
 {"metadata":{"name":"a1","labels":{}},"status":{"nodeInfo":{"kubeletVersion":"v1.35.6+k3s1"}}},
 {"metadata":{"name":"s1","labels":{"node-role.kubernetes.io/control-plane":"true"}},"status":{"nodeInfo":{"kubeletVersion":"v1.36.5+k3s1"}}}]}`))
	}))
	defer api.Close()
	p := writeInventory(t, clusterInventory)
	inv, _, err := inventory.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	kc := inv.State().Kubeconfig()
	os.MkdirAll(filepath.Dir(kc), 0o700)
	os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: lab, cluster: {server: `+api.URL+`}}]
users: [{name: lab, user: {token: t}}]
contexts: [{name: lab, context: {cluster: lab, user: lab}}]
current-context: lab
`), 0o600)
	out, errOut, code := rack(t, nil, "-i", p, "-o", "json", "upgrade", "plan", "--to", "v1.36", "--at", "2026-12-02")
	if code != exitOK {
		t.Fatalf("exit %d %s", code, errOut)
	}
	var plan struct {
		From, To string
		Steps    []struct {
			Version string
			Nodes   []string
			Servers int
		}
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatal(err, out)
	}
	// The server is already there: only the agent is left.
	if plan.From != "v1.35.6+k3s1" || len(plan.Steps) != 1 || plan.Steps[0].Version != "v1.36.5+k3s1" ||
		strings.Join(plan.Steps[0].Nodes, ",") != "a1" || plan.Steps[0].Servers != 0 {
		t.Fatalf("plan %s", out)
	}
	// Without a kubeconfig the error says what to do.
	os.Remove(kc)
	_, errOut, code = rack(t, nil, "-i", p, "upgrade", "plan")
	if code != exitFailed || !strings.Contains(errOut, "--from VERSION") {
		t.Fatalf("no kubeconfig: exit %d %s", code, errOut)
	}
}
