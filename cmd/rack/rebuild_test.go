package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/homelab/rack/apps/apptest"
	"github.com/homelab/rack/internal/fakek3s"
	"github.com/homelab/rack/internal/testlab"
)

// destroyNode does to a test host what a dead SD card does to a node.
func destroyNode(t *testing.T, lab *testlab.Lab, name string) {
	t.Helper()
	if out, err := lab.Host(name).Exec(context.Background(), `systemctl stop k3s k3s-agent 2>/dev/null; systemctl disable k3s k3s-agent 2>/dev/null
rm -rf /var/lib/rancher/k3s /etc/rancher/k3s /etc/rancher/node /usr/local/bin/k3s /etc/systemd/system/k3s.service /etc/systemd/system/k3s.service.env /etc/systemd/system/k3s-agent.service /etc/systemd/system/k3s-agent.service.env
systemctl daemon-reload; true`); err != nil {
		t.Fatalf("destroying %s: %v %s", name, err, out)
	}
}

// The only server of a SQLite rack dies; rack backup's copy brings it back.
// The first rebuild is killed (SIGKILL, a real rack process) while it holds
// at the server's restart, the restored database already in place; the
// next rebuild sees its journal, starts the restore over and finishes it.
func TestRebuildKilledMidwayIsFinished(t *testing.T) {
	t.Parallel() // its own lab; rack runs as a process of its own
	lab := testlab.New(t, testlab.Spec{Cluster: "dr", Nodes: []testlab.Node{{Name: "srv", Role: "server"}}})
	ctx := killCtx(t)
	env := lab.Env()
	mustUp(t, lab)
	cs := lab.Clientset()
	// Under load kwok's heartbeats come late and the node controller marks
	// pods not ready for good; budgets would then never allow a disruption.
	apptest.KeepReady(t, cs, "default")
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kept"}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := rack(t, env, "-i", lab.Inventory, "backup", "-o", "json")
	if code != exitOK {
		t.Fatalf("rack backup: exit %d\n%s\n%s", code, out, errOut)
	}
	var res struct {
		Path     string
		Manifest struct{ Cluster, File, SHA256, TokenFile, Datastore string }
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Manifest.Cluster != "dr" || res.Manifest.Datastore != "sqlite" || !strings.HasSuffix(res.Path, ".db") {
		t.Fatalf("rack backup -o json: %v\n%s", err, out)
	}
	if filepath.Dir(res.Path) != filepath.Join(lab.Dir, "backups", "dr") {
		t.Errorf("default backup folder: %s", res.Path)
	}
	token, err := os.ReadFile(filepath.Join(filepath.Dir(res.Path), res.Manifest.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimSpace(string(token))
	if i := strings.LastIndex(secret, ":"); i >= 0 {
		secret = secret[i+1:]
	}
	if strings.Contains(out+errOut, secret) {
		t.Fatal("rack backup printed the token")
	}

	destroyNode(t, lab, "srv")
	out, errOut, code = rack(t, env, "-i", lab.Inventory, "rebuild", "--dry-run")
	if code != exitOK || !strings.Contains(out, "restore") || !strings.Contains(out, "back as /var/lib/rancher/k3s/server/db/state.db") {
		t.Fatalf("rack rebuild --dry-run: exit %d\n%s\n%s", code, out, errOut)
	}
	if ok, _ := lab.Host("srv").FileExists("/usr/local/bin/k3s"); ok {
		t.Fatal("--dry-run installed k3s")
	}

	srv := lab.Host("srv")
	if err := fakek3s.CloseGate(ctx, srv, "restart", "k3s"); err != nil {
		t.Fatal(err)
	}
	cmd := startRack(t, lab, "rebuild", "--yes", "--nodes-only")
	if _, err := fakek3s.WaitAtGate(ctx, srv, "restart", "k3s"); err != nil {
		t.Fatal(err)
	}
	sigkill(t, cmd)
	if err := fakek3s.KillAtGate(ctx, srv, "restart", "k3s"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := srv.FileExists("/var/lib/rancher/k3s/server/db/state.db"); !ok {
		t.Fatal("the restored database was not in place when rack was killed")
	}
	if _, err := os.Stat(filepath.Join(lab.Dir, ".rack", "dr", "rebuild.json")); err != nil {
		t.Fatalf("no journal of the interrupted restore: %v", err)
	}

	out, errOut, code = rack(t, env, "-i", lab.Inventory, "rebuild", "--dry-run")
	if code != exitOK || !strings.Contains(out, "did not finish") {
		t.Fatalf("plan after the kill: exit %d\n%s\n%s", code, out, errOut)
	}
	out, errOut, code = rack(t, env, "-i", lab.Inventory, "rebuild", "--yes", "--nodes-only")
	if code != exitOK {
		t.Fatalf("rack rebuild after the kill: exit %d\n%s\n%s", code, out, errOut)
	}
	if cm, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "kept", metav1.GetOptions{}); err != nil || cm.Data["k"] != "v" {
		t.Errorf("ConfigMap after the rebuild: %v %v", cm, err)
	}
	if v := kubeletVersion(t, lab, "srv"); v != lab.Spec.Version {
		t.Errorf("srv runs %s", v)
	}
	if _, err := os.Stat(filepath.Join(lab.Dir, ".rack", "dr", "rebuild.json")); !os.IsNotExist(err) {
		t.Errorf("the journal outlived the rebuild: %v", err)
	}
	if plan := planText(t, lab); !strings.Contains(plan, "no changes") {
		t.Errorf("rack plan after the rebuild:\n%s", plan)
	}
	// Nothing left to do.
	out, _, code = rack(t, env, "-i", lab.Inventory, "rebuild", "--yes", "--nodes-only")
	if code != exitOK || !strings.Contains(out, "nothing to rebuild") {
		t.Errorf("a second rebuild: exit %d\n%s", code, out)
	}
}
