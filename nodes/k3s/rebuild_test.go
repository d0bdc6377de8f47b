package k3s_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/internal/testlab"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/k3s"
	"github.com/homelab/rack/nodes/kube"
)

// The disaster tests: back up a test rack, lose its servers (or one node)
// the way an SD card dies, and rebuild it with rack; every object must be
// back as it was.

func backup(t *testing.T, lab *testlab.Lab, bo k3s.BackupOptions) (*k3s.BackupPlan, *k3s.BackupManifest) {
	t.Helper()
	inv := lab.LoadInventory(t)
	o := options(t, lab, inv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p, err := k3s.PlanBackup(ctx, inv, o, bo)
	if err != nil {
		t.Fatalf("rack backup (plan): %v", err)
	}
	logPlan(t, "backup", p)
	m, err := p.Run(ctx)
	if err != nil {
		t.Fatalf("rack backup: %v", err)
	}
	return p, m
}

// logPlan logs a plan the way rack prints it, and returns that text.
func logPlan(t testing.TB, what string, p interface{ WriteText(io.Writer) error }) string {
	t.Helper()
	var sb strings.Builder
	if err := p.WriteText(&sb); err != nil {
		t.Fatalf("%s plan: %v", what, err)
	}
	t.Logf("%s plan:\n%s", what, sb.String())
	return sb.String()
}

// timedWriter logs progress lines with the time since the test started.
type timedWriter struct {
	t     *testing.T
	start time.Time
}

func (w timedWriter) Write(p []byte) (int, error) {
	w.t.Logf("%6.1fs %s", time.Since(w.start).Seconds(), strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func planRebuild(t *testing.T, lab *testlab.Lab, ro k3s.RebuildOptions) (*k3s.RebuildPlan, k3s.Options) {
	t.Helper()
	inv := lab.LoadInventory(t)
	o := options(t, lab, inv)
	o.FanOut.Progress = nodes.NewPlainProgress(timedWriter{t, time.Now()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p, err := k3s.PlanRebuild(ctx, inv, o, ro)
	if err != nil {
		t.Fatalf("rack rebuild (plan): %v", err)
	}
	logPlan(t, "rebuild", p)
	return p, o
}

func rebuild(t *testing.T, lab *testlab.Lab, ro k3s.RebuildOptions) *k3s.RebuildPlan {
	t.Helper()
	p, o := planRebuild(t, lab, ro)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := p.Run(ctx, o); err != nil {
		logJournals(t, lab)
		t.Fatalf("rack rebuild: %v", err)
	}
	return p
}

// logJournals logs the tail of every node's k3s journal: what the fake k3s
// (its etcd member controller, its datastore) said while rack waited.
func logJournals(t *testing.T, lab *testlab.Lab) {
	t.Helper()
	for _, n := range lab.Spec.Nodes {
		out, _ := lab.Host(n.Name).Exec(context.Background(), "journalctl -u k3s -u k3s-agent -n 40 --no-pager 2>&1")
		t.Logf("%s: journalctl -u k3s -u k3s-agent -n 40:\n%s", n.Name, out)
	}
}

// destroy does to a node what a dead SD card does: k3s stopped, its state,
// data, binary, units and node password gone.
func destroy(t *testing.T, lab *testlab.Lab, names ...string) {
	t.Helper()
	for _, n := range names {
		if out, err := lab.Host(n).Exec(context.Background(), `systemctl stop k3s k3s-agent 2>/dev/null; systemctl disable k3s k3s-agent 2>/dev/null
rm -rf /var/lib/rancher/k3s /etc/rancher/k3s /etc/rancher/node /usr/local/bin/k3s /etc/systemd/system/k3s.service /etc/systemd/system/k3s.service.env /etc/systemd/system/k3s-agent.service /etc/systemd/system/k3s-agent.service.env
systemctl daemon-reload; true`); err != nil {
			t.Fatalf("destroying %s: %v %s", n, err, out)
		}
	}
}

func blank(t *testing.T, lab *testlab.Lab, node string) bool {
	t.Helper()
	for _, p := range []string{k3s.BinaryPath, k3s.ConfigPath, k3s.ServerDBDir} {
		if ok, _ := lab.Host(node).FileExists(p); ok {
			return false
		}
	}
	return true
}

// kickKwokOnRestore restarts kwok (the test rack's stand-in for every
// node's kubelet) once the first server runs the restored cluster. kwok's
// informers were watching that API server when it died; client-go backs
// them off (up to 30 s, and a restored etcd's older resourceVersions cost
// another round) before they see the Nodes the rejoining servers register,
// so without this the rebuild would measure kwok's backoff: a real node's
// kubelet starts fresh when its node rejoins. testlab supervises kwok and
// starts it again within a second. The process is found by its lab's own
// kubeconfig path and ended by its pid.
func kickKwokOnRestore(tb testing.TB, lab *testlab.Lab) (stop func()) {
	journal := filepath.Join(lab.Dir, ".rack", lab.Spec.Cluster, "rebuild.json")
	marker := "--kubeconfig=" + filepath.Join(lab.Dir, "kwok", "kubeconfig")
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			var j struct{ Restored bool }
			if b, err := os.ReadFile(journal); err != nil || json.Unmarshal(b, &j) != nil || !j.Restored {
				continue
			}
			procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, p := range procs {
				b, err := os.ReadFile(p)
				if err != nil || !strings.Contains(string(b), marker) {
					continue
				}
				var pid int
				if _, err := fmt.Sscanf(filepath.Base(filepath.Dir(p)), "%d", &pid); err == nil {
					if proc, err := os.FindProcess(pid); err == nil {
						_ = proc.Kill()
						tb.Logf("restarted kwok (pid %d) once %s was restored", pid, lab.FirstServer())
					}
				}
			}
			return
		}
	}()
	return func() { close(done); <-finished }
}

// watchArgv scans every process's arguments (the test hosts share this
// machine's PID namespace) until stop, which returns what held secret.
func watchArgv(secret string) (stop func() (leaks []string, scans int)) {
	done := make(chan struct{})
	var leaks []string
	var scans int
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			default:
			}
			scans++
			procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, p := range procs {
				if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), secret) {
					leaks = append(leaks, p+": "+strings.ReplaceAll(string(b), "\x00", " "))
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return func() ([]string, int) { close(done); <-finished; return leaks, scans }
}

const testLabel = "rack-disaster-test"

// makeObjects creates what a homelab holds: namespaces, ConfigMaps,
// Secrets and a Deployment.
func makeObjects(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	for _, ns := range []string{"media", "home-automation"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{testLabel: "1"}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("settings-%d", i), Labels: map[string]string{"app": ns}},
				Data: map[string]string{"config.yaml": fmt.Sprintf("shelf: %d\nname: %s\n", i, ns)}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "credentials"},
			Data: map[string][]byte{"password": []byte("hunter2-" + ns), "key": {0, 1, 2, 255}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	replicas := int32(2)
	labels := map[string]string{"app": "jellyfin"}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "jellyfin", Namespace: "media", Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "jellyfin", Image: "jellyfin/jellyfin:10.9.0",
					Env: []corev1.EnvVar{{Name: "TZ", Value: "Europe/Berlin"}}}}}}}}
	if _, err := cs.AppsV1().Deployments("media").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// dump is a canonical form of the test objects: resourceVersions, uids,
// managedFields, timestamps and status aside.
func dump(t *testing.T, cs kubernetes.Interface) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	add := func(kind string, o metav1.Object, obj runtime.Object) {
		b, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		delete(m, "status")
		if md, ok := m["metadata"].(map[string]any); ok {
			for _, k := range []string{"resourceVersion", "uid", "managedFields", "creationTimestamp", "generation"} {
				delete(md, k)
			}
		}
		c, _ := json.Marshal(m) // map keys sorted: canonical
		out[kind+"/"+o.GetNamespace()+"/"+o.GetName()] = string(c)
	}
	nsl, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: testLabel})
	if err != nil {
		t.Fatal(err)
	}
	for i := range nsl.Items {
		ns := &nsl.Items[i]
		add("Namespace", ns, ns)
		cms, err := cs.CoreV1().ConfigMaps(ns.Name).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for j := range cms.Items {
			add("ConfigMap", &cms.Items[j], &cms.Items[j])
		}
		ss, err := cs.CoreV1().Secrets(ns.Name).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for j := range ss.Items {
			add("Secret", &ss.Items[j], &ss.Items[j])
		}
		ds, err := cs.AppsV1().Deployments(ns.Name).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for j := range ds.Items {
			add("Deployment", &ds.Items[j], &ds.Items[j])
		}
	}
	return out
}

func sameDump(t *testing.T, before, after map[string]string) {
	t.Helper()
	if len(before) < 10 {
		t.Fatalf("only %d objects in the dump before: the test made too few", len(before))
	}
	if reflect.DeepEqual(before, after) {
		return
	}
	var keys []string
	for k := range before {
		keys = append(keys, k)
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if before[k] != after[k] {
			t.Errorf("%s differs:\n  before: %s\n  after:  %s", k, before[k], after[k])
		}
	}
}

func allReady(t *testing.T, lab *testlab.Lab, names ...string) {
	t.Helper()
	got := nodeList(t, lab)
	for _, n := range names {
		node, ok := got[n]
		if !ok || !kube.NodeReady(&node) || node.Status.NodeInfo.KubeletVersion != lab.Spec.Version {
			t.Errorf("node %s: registered=%v ready=%v version=%q", n, ok, ok && kube.NodeReady(&node), node.Status.NodeInfo.KubeletVersion)
		}
	}
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// corruptCopy copies a backup (file, manifest, token) to a new folder and
// flips one byte in the middle of the file.
func corruptCopy(t *testing.T, b k3s.BackupManifest, dir string) string {
	t.Helper()
	dst := t.TempDir()
	for _, f := range []string{b.File, b.TokenFile, strings.TrimSuffix(b.File, filepath.Ext(b.File)) + ".json"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == b.File {
			data[len(data)/2] ^= 0x01
		}
		if err := os.WriteFile(filepath.Join(dst, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dst, b.File)
}

func refusedWith(t *testing.T, lab *testlab.Lab, ro k3s.RebuildOptions, want string) {
	t.Helper()
	p, o := planRebuild(t, lab, ro)
	if !strings.Contains(strings.Join(p.Refusals, "\n"), want) {
		t.Fatalf("rebuild refusals %q lack %q", p.Refusals, want)
	}
	if _, err := p.Run(context.Background(), o); !errors.Is(err, k3s.ErrRefused) {
		t.Fatalf("a refused rebuild ran: %v", err)
	}
}

// TestRebuildOneServerSQLite is the homelab this project comes from: one
// server on k3s' SQLite, agents. A blank agent rejoins alone; backups are
// taken (online with sqlite3, then with k3s stopped, as on a node without
// sqlite3) and pruned; a corrupted one is refused; the server dies and comes
// back from the newest backup with every object as it was.
func TestRebuildOneServerSQLite(t *testing.T) {
	t.Parallel()
	lab := testlab.New(t, testlab.Spec{Cluster: "shelf", Nodes: []testlab.Node{
		{Name: "srv", Role: "server"}, {Name: "wrk-1", Role: "agent", Labels: map[string]string{"node-role.kubernetes.io/worker": "true"}}, {Name: "wrk-2", Role: "agent"},
	}})
	ctx := context.Background()
	if _, _, err := up(t, lab); err != nil {
		t.Fatalf("rack up: %v", err)
	}
	cs := lab.Clientset()
	makeObjects(t, cs)

	t.Run("a blank agent rejoins without touching anything else", func(t *testing.T) {
		oldUID := nodeList(t, lab)["wrk-1"].UID
		srvStarts, wrk2Starts := starts(t, lab, "srv", "k3s"), starts(t, lab, "wrk-2", "k3s-agent")
		destroy(t, lab, "wrk-1")
		p := rebuild(t, lab, k3s.RebuildOptions{})
		if p.Mode != k3s.RebuildRejoin {
			t.Fatalf("mode %s, want rejoin", p.Mode)
		}
		for _, np := range p.Nodes {
			if want := map[string]k3s.Action{"srv": k3s.ActionNothing, "wrk-1": k3s.ActionRejoin, "wrk-2": k3s.ActionNothing}[np.Node]; np.Action != want {
				t.Errorf("%s: %s, want %s", np.Node, np.Action, want)
			}
		}
		allReady(t, lab, "srv", "wrk-1", "wrk-2")
		n := nodeList(t, lab)["wrk-1"]
		if n.UID == oldUID {
			t.Error("wrk-1 kept its old Node: the stale one was not deleted")
		}
		if n.Labels["node-role.kubernetes.io/worker"] != "true" {
			t.Errorf("wrk-1's API-set labels were not put back: %v", n.Labels)
		}
		if a, b := starts(t, lab, "srv", "k3s"), starts(t, lab, "wrk-2", "k3s-agent"); a != srvStarts || b != wrk2Starts {
			t.Errorf("other nodes were restarted: srv %d→%d, wrk-2 %d→%d", srvStarts, a, wrk2Starts, b)
		}
		if p := func() *k3s.RebuildPlan { p, _ := planRebuild(t, lab, k3s.RebuildOptions{}); return p }(); p.Mode != k3s.RebuildNothing {
			t.Errorf("after the rejoin, rebuild plans %s", p.Mode)
		}
	})

	// k3s has no snapshot command for SQLite, and says so.
	if out, err := lab.Host("srv").Exec(ctx, "k3s etcd-snapshot save 2>&1"); err == nil || !strings.Contains(string(out), "etcd datastore disabled") {
		t.Errorf("k3s etcd-snapshot save on the SQLite server: %v %s", err, out)
	}

	dir := k3s.DefaultBackupDir(lab.LoadInventory(t))
	clock := time.Date(2026, 5, 1, 3, 0, 0, 0, time.UTC)
	next := func() time.Time { clock = clock.Add(time.Hour); return clock }
	var last *k3s.BackupManifest
	t.Run("backup", func(t *testing.T) {
		srvStarts := starts(t, lab, "srv", "k3s")
		for i := 0; i < 3; i++ {
			p, m := backup(t, lab, k3s.BackupOptions{Keep: 2, Now: next})
			if p.Method != k3s.MethodSQLiteOnline || m.Datastore != k3s.DatastoreSQLite {
				t.Fatalf("SQLite backup by %q (%s)", p.Method, m.Datastore)
			}
			last = m
		}
		if n := starts(t, lab, "srv", "k3s"); n != srvStarts {
			t.Errorf("the online backup restarted k3s (%d → %d starts)", srvStarts, n)
		}
		checkBackup(t, lab, dir, last, ".db")
		manifests, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		if len(manifests) != 2 || len(files) != 6 {
			t.Errorf("--keep 2 left %d manifests, %d files: %v", len(manifests), len(files), files)
		}
		if _, err := os.Stat(filepath.Join(dir, "shelf-20260501T040000Z.db")); err == nil {
			t.Error("the oldest backup was not pruned")
		}
		// The copy is a SQLite database that SQLite finds intact.
		if out, err := exec.Command("sqlite3", filepath.Join(dir, last.File), "PRAGMA integrity_check").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ok" {
			t.Errorf("integrity of %s: %s %v", last.File, out, err)
		}
	})

	t.Run("backup with k3s stopped when the node has no sqlite3", func(t *testing.T) {
		// A node without a working sqlite3 (the shim shadows the real one).
		if _, err := lab.Host("srv").Exec(ctx, `printf '#!/bin/sh\necho "sqlite3: not found" >&2\nexit 127\n' > /usr/local/bin/sqlite3 && chmod 755 /usr/local/bin/sqlite3`); err != nil {
			t.Fatal(err)
		}
		defer lab.Host("srv").Exec(ctx, "rm -f /usr/local/bin/sqlite3")
		// Written after the earlier backups: the restore must bring it back.
		if _, err := cs.CoreV1().ConfigMaps("media").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "written-last"}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		srvStarts := starts(t, lab, "srv", "k3s")
		p, m := backup(t, lab, k3s.BackupOptions{Keep: 2, Now: next})
		text := logPlan(t, "backup", p)
		if p.Method != k3s.MethodSQLiteStopped || !strings.Contains(text, "stop k3s for the moment of the copy") || !strings.Contains(text, "is stopped for the moment of the copy") {
			t.Errorf("plan without sqlite3 (%s):\n%s", p.Method, text)
		}
		if n := starts(t, lab, "srv", "k3s"); n != srvStarts+1 {
			t.Errorf("k3s starts %d → %d, want one restart", srvStarts, n)
		}
		allReady(t, lab, "srv")
		checkBackup(t, lab, dir, m, ".db")
		if out, err := exec.Command("sqlite3", filepath.Join(dir, m.File), "PRAGMA integrity_check").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ok" {
			t.Errorf("integrity of %s: %s %v", m.File, out, err)
		}
		last = m
	})

	before := dump(t, cs)
	srvStarts := starts(t, lab, "srv", "k3s")
	t.Run("a corrupted snapshot is refused before anything changes", func(t *testing.T) {
		bad := corruptCopy(t, *last, dir)
		refusedWith(t, lab, k3s.RebuildOptions{Snapshot: bad, Restore: true}, "is corrupted")
		if n := starts(t, lab, "srv", "k3s"); n != srvStarts {
			t.Errorf("k3s was restarted by a refused rebuild (%d → %d)", srvStarts, n)
		}
		sameDump(t, before, dump(t, cs))
	})

	destroy(t, lab, "srv")
	t.Run("the server is lost: a corrupted snapshot is still refused", func(t *testing.T) {
		refusedWith(t, lab, k3s.RebuildOptions{Snapshot: corruptCopy(t, *last, dir)}, "is corrupted")
		if !blank(t, lab, "srv") {
			t.Error("the refused rebuild touched the server")
		}
	})
	p := rebuild(t, lab, k3s.RebuildOptions{})
	if p.Mode != k3s.RebuildRestore || p.Snapshot == nil || filepath.Base(p.Snapshot.File) != last.File {
		t.Fatalf("restore plan: mode %s, snapshot %+v (want %s)", p.Mode, p.Snapshot, last.File)
	}
	allReady(t, lab, "srv", "wrk-1", "wrk-2")
	sameDump(t, before, dump(t, lab.Clientset()))
	if _, err := os.Stat(filepath.Join(lab.Dir, ".rack", "shelf", "rebuild.json")); !os.IsNotExist(err) {
		t.Errorf("the journal outlived the rebuild: %v", err)
	}
	if p, _ := planRebuild(t, lab, k3s.RebuildOptions{}); p.Mode != k3s.RebuildNothing {
		t.Errorf("after the rebuild, rebuild plans %s", p.Mode)
	}
	if plan, _, err := up(t, lab); err != nil || plan.Changes() != 0 {
		t.Errorf("rack up after the rebuild: %v %v", actions(plan), err)
	}
}

// checkBackup: the file is there, its sha256 and size are the manifest's,
// the manifest names the cluster, version and servers, the token is kept
// 0600 and is the server's.
func checkBackup(t *testing.T, lab *testlab.Lab, dir string, m *k3s.BackupManifest, ext string) {
	t.Helper()
	path := filepath.Join(dir, m.File)
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 || st.Size() != m.Size {
		t.Fatalf("%s: %v %v (manifest size %d)", path, st, err, m.Size)
	}
	if sum := sha256File(t, path); sum != m.SHA256 {
		t.Errorf("%s: sha256 %s, manifest %s", m.File, sum, m.SHA256)
	}
	if !strings.HasPrefix(m.File, lab.Spec.Cluster+"-") || filepath.Ext(m.File) != ext {
		t.Errorf("file name %s", m.File)
	}
	var servers []string
	for _, n := range lab.Spec.Nodes {
		if n.Role == "server" {
			servers = append(servers, n.Name)
		}
	}
	if m.Cluster != lab.Spec.Cluster || m.K3sVersion != lab.Spec.Version || strings.Join(m.Servers, ",") != strings.Join(servers, ",") {
		t.Errorf("manifest %+v", m)
	}
	if _, err := time.Parse(time.RFC3339, m.Time); err != nil {
		t.Errorf("manifest time %q: %v", m.Time, err)
	}
	raw, err := os.ReadFile(strings.TrimSuffix(path, ext) + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	_ = json.Unmarshal(raw, &fields)
	for _, k := range []string{"cluster", "k3sVersion", "servers", "time", "sha256", "file"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("manifest lacks %q: %s", k, raw)
		}
	}
	tok := filepath.Join(dir, m.TokenFile)
	st, err = os.Stat(tok)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file %s: %v %v", tok, st, err)
	}
	got, _ := os.ReadFile(tok)
	want, err := lab.Host(m.Node).ReadFile(k3s.ServerTokenPath)
	if err != nil || strings.TrimSpace(string(got)) != strings.TrimSpace(string(want)) {
		t.Errorf("the kept token is not the server's (%v)", err)
	}
}

// TestRebuildThreeServersEtcd: three servers on embedded etcd. A blank
// server rejoins (its stale etcd member removed first); then every server
// dies and the cluster comes back from an etcd snapshot, with three members
// and every object as it was.
func TestRebuildThreeServersEtcd(t *testing.T) {
	t.Parallel()
	lab := testlab.New(t, testlab.Spec{Cluster: "ha", Nodes: []testlab.Node{
		{Name: "etcd-1", Role: "server"}, {Name: "etcd-2", Role: "server"}, {Name: "etcd-3", Role: "server"},
	}})
	ctx := context.Background()
	if _, _, err := up(t, lab); err != nil {
		t.Fatalf("rack up: %v", err)
	}
	makeObjects(t, lab.Clientset())
	members := func(server string) string {
		t.Helper()
		m, err := lab.EtcdMembers(ctx, server)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(m, ",")
	}

	t.Run("a blank server rejoins", func(t *testing.T) {
		s1, s2 := starts(t, lab, "etcd-1", "k3s"), starts(t, lab, "etcd-2", "k3s")
		destroy(t, lab, "etcd-3")
		p := rebuild(t, lab, k3s.RebuildOptions{})
		if p.Mode != k3s.RebuildRejoin || p.Changes() != 1 {
			t.Fatalf("mode %s, %d changes", p.Mode, p.Changes())
		}
		allReady(t, lab, "etcd-1", "etcd-2", "etcd-3")
		if m := members("etcd-1"); m != "etcd-1,etcd-2,etcd-3" {
			t.Errorf("etcd members %s", m)
		}
		if a, b := starts(t, lab, "etcd-1", "k3s"), starts(t, lab, "etcd-2", "k3s"); a != s1 || b != s2 {
			t.Errorf("the other servers were restarted (%d→%d, %d→%d)", s1, a, s2, b)
		}
	})

	before := dump(t, lab.Clientset())
	bp, m := backup(t, lab, k3s.BackupOptions{})
	if bp.Method != k3s.MethodEtcdSnapshot || m.Datastore != k3s.DatastoreEtcd {
		t.Fatalf("etcd backup by %q (%s)", bp.Method, m.Datastore)
	}
	dir := k3s.DefaultBackupDir(lab.LoadInventory(t))
	checkBackup(t, lab, dir, m, ".snapshot")
	// The snapshot left the node: k3s lists none.
	if out, err := lab.Host(m.Node).Exec(ctx, "k3s etcd-snapshot ls 2>/dev/null"); err != nil || strings.Contains(string(out), "rack-") {
		t.Errorf("k3s etcd-snapshot ls after the backup: %s %v", out, err)
	}

	destroy(t, lab, "etcd-1", "etcd-2", "etcd-3")
	stop := kickKwokOnRestore(t, lab)
	token, err := os.ReadFile(filepath.Join(lab.Dir, ".rack", "ha", "token"))
	if err != nil || len(strings.TrimSpace(string(token))) < 16 {
		t.Fatalf("rack's token file: %v", err)
	}
	stopScan := watchArgv(strings.TrimSpace(string(token)))
	p := rebuild(t, lab, k3s.RebuildOptions{})
	if leaks, scans := stopScan(); len(leaks) > 0 || scans < 10 {
		t.Errorf("the token appeared in argv during the restore (%d scans):\n%s", scans, strings.Join(leaks, "\n"))
	}
	stop()
	if p.Mode != k3s.RebuildRestore {
		t.Fatalf("mode %s, want restore", p.Mode)
	}
	allReady(t, lab, "etcd-1", "etcd-2", "etcd-3")
	for _, s := range []string{"etcd-1", "etcd-2", "etcd-3"} {
		if got := members(s); got != "etcd-1,etcd-2,etcd-3" {
			t.Errorf("etcd members seen from %s: %s", s, got)
		}
	}
	sameDump(t, before, dump(t, lab.Clientset()))
	// The uploaded snapshot and the cluster-reset leftovers are gone.
	if out, _ := lab.Host("etcd-1").Exec(ctx, "ls /var/lib/rancher/k3s/server/db/snapshots /var/lib/rancher/k3s/server/db/reset-flag 2>/dev/null"); strings.Contains(string(out), "rack-restore") || strings.Contains(string(out), "reset-flag") {
		t.Errorf("left on etcd-1: %s", out)
	}
	if p, _ := planRebuild(t, lab, k3s.RebuildOptions{}); p.Mode != k3s.RebuildNothing {
		t.Errorf("after the rebuild, rebuild plans %s", p.Mode)
	}
}
