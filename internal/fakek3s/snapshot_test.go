package fakek3s

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/internal/testrack"
)

// TestFakeK3sSnapshotAndReset drives the fake's etcd-snapshot, cluster-reset
// and node passwords the way an operator drives k3s' (docs.k3s.io
// "etcd-snapshot"), on a real etcd: save, ls, delete; a restore into a
// fresh data dir that brings back exactly the snapshot's objects; the
// refusals k3s makes (wrong token, a second plain reset, a restore path
// without --cluster-reset, a server without etcd); and an agent whose node
// password no longer matches being refused until its Node (and with it,
// through the owner reference, its password Secret) is deleted.
func TestFakeK3sSnapshotAndReset(t *testing.T) {
	t.Parallel()
	r := testrack.New(t, 2)
	server, agent := r.Hosts[0], r.Hosts[1]
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c, cs := installOn(ctx, t, r, server)
	apiURL := "https://" + server.Addr + ":6443"
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", UnitLog(context.Background(), server, "k3s"))
			t.Logf("agent log:\n%s", UnitLog(context.Background(), agent, "k3s-agent"))
		}
	})
	writeFile(t, server, "/etc/rancher/k3s/config.yaml", 0o600, fmt.Sprintf("token: %s\ncluster-init: true\nnode-name: srv\nnode-ip: %s\n", clusterToken, server.Addr))
	writeFile(t, server, "/etc/systemd/system/k3s.service", 0o644, k3sUnitFor("server"))
	mustExec(t, server, "systemctl daemon-reload && systemctl enable --now k3s")
	waitNodeReady(t, ctx, cs, "srv")
	writeFile(t, agent, "/etc/rancher/k3s/config.yaml", 0o600, fmt.Sprintf("token: %s\nserver: %s\nnode-name: wrk\n", clusterToken, apiURL))
	writeFile(t, agent, "/etc/systemd/system/k3s-agent.service", 0o644, k3sUnitFor("agent"))
	mustExec(t, agent, "systemctl daemon-reload && systemctl enable --now k3s-agent")
	waitNodeReady(t, ctx, cs, "wrk")

	// The agent's password: 0600 on the node, its hash in a Secret the
	// Node owns.
	if got := mustExec(t, agent, "stat -c %a /etc/rancher/node/password"); got != "600" {
		t.Errorf("/etc/rancher/node/password mode %s", got)
	}
	testenv.WaitFor(t, ctx, "wrk's node-password Secret owned by its Node", func() (bool, string) {
		s, err := cs.CoreV1().Secrets("kube-system").Get(ctx, "wrk.node-password.k3s", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return s.Type == "k3s.cattle.io/node-password" && len(s.OwnerReferences) == 1 && s.OwnerReferences[0].Kind == "Node", fmt.Sprint(s.Type, s.OwnerReferences)
	})

	t.Run("etcd-snapshot save, ls, delete", func(t *testing.T) {
		out := mustExec(t, server, "k3s etcd-snapshot save --name t 2>&1")
		m := regexp.MustCompile(`Snapshot (t-srv-[0-9]+) saved\.`).FindStringSubmatch(out)
		if m == nil || !strings.Contains(out, "Saving etcd snapshot to /var/lib/rancher/k3s/server/db/snapshots/t-srv-") {
			t.Fatalf("k3s etcd-snapshot save said:\n%s", out)
		}
		if got := mustExec(t, server, "stat -c %a /var/lib/rancher/k3s/server/db/snapshots/"+m[1]); got != "600" {
			t.Errorf("snapshot mode %s", got)
		}
		ls := mustExec(t, server, "k3s etcd-snapshot ls 2>/dev/null")
		if !strings.HasPrefix(ls, "Name") || !strings.Contains(ls, m[1]) || !strings.Contains(ls, "file:///var/lib/rancher/k3s/server/db/snapshots/"+m[1]) {
			t.Errorf("k3s etcd-snapshot ls:\n%s", ls)
		}
		if out := mustExec(t, server, "k3s etcd-snapshot delete "+m[1]+" 2>&1"); !strings.Contains(out, "Snapshot "+m[1]+" deleted.") {
			t.Errorf("delete said: %s", out)
		}
		if ls := mustExec(t, server, "k3s etcd-snapshot ls 2>/dev/null"); strings.Contains(ls, m[1]) {
			t.Errorf("deleted snapshot still listed:\n%s", ls)
		}
		// A node without etcd (an agent here, a SQLite server alike).
		out, code := exec1(t, agent, "k3s etcd-snapshot save 2>&1")
		if code != 1 || !strings.Contains(out, "etcd datastore disabled") {
			t.Errorf("etcd-snapshot save without etcd: exit %d: %s", code, out)
		}
	})

	// Objects before and after the snapshot.
	mk := func(name string) {
		t.Helper()
		_, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"k": name}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	mk("before")
	out := mustExec(t, server, "k3s etcd-snapshot save 2>&1")
	m := regexp.MustCompile(`Snapshot (on-demand-srv-[0-9]+) saved\.`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("k3s etcd-snapshot save said:\n%s", out)
	}
	snap := "/var/lib/rancher/k3s/server/db/snapshots/" + m[1]
	mk("after")

	mustExec(t, server, "systemctl stop k3s")
	// Refusals, as k3s makes them.
	if out, code := exec1(t, server, "k3s server --cluster-reset-restore-path="+snap+" 2>&1"); code != 1 || !strings.Contains(out, "--cluster-reset required with --cluster-reset-restore-path") {
		t.Errorf("restore path without --cluster-reset: exit %d: %s", code, out)
	}
	if out, code := exec1(t, server, "k3s server --cluster-reset --token wrong-token --cluster-reset-restore-path="+snap+" 2>&1"); code != 1 || !strings.Contains(out, "bootstrap data already found and encrypted with different token") {
		t.Errorf("restore with another token: exit %d: %s", code, out)
	}
	// k3s moves the data aside to etcd-old-<unix seconds> before it finds
	// the token wrong, so a second restore within the same second fails
	// ("file exists"), in k3s as in the fake: let the second turn.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 50*time.Millisecond)))
	out, code := exec1(t, server, "k3s server --cluster-reset --cluster-reset-restore-path="+snap+" 2>&1")
	if code != 0 || !strings.Contains(out, "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now.") {
		t.Fatalf("cluster-reset with restore: exit %d:\n%s", code, out)
	}
	if got := mustExec(t, server, "ls -d /var/lib/rancher/k3s/server/db/etcd-old-* | wc -l; ls /var/lib/rancher/k3s/server/db/reset-flag"); !strings.HasSuffix(got, "/var/lib/rancher/k3s/server/db/reset-flag") {
		t.Errorf("after the restore: %s", got)
	}
	if out, code := exec1(t, server, "k3s server --cluster-reset 2>&1"); code != 1 || !strings.Contains(out, "Managed etcd cluster membership was previously reset") {
		t.Errorf("second plain reset: exit %d: %s", code, out)
	}

	mustExec(t, server, "systemctl start k3s")
	waitNodeReady(t, ctx, cs, "srv")
	if cm, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "before", metav1.GetOptions{}); err != nil || cm.Data["k"] != "before" {
		t.Errorf("ConfigMap from before the snapshot: %v %v", cm, err)
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "after", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ConfigMap made after the snapshot is still there: %v", err)
	}
	testenv.WaitFor(t, ctx, "reset-flag removed by the normal start", func() (bool, string) {
		out, code := exec1(t, server, "ls /var/lib/rancher/k3s/server/db/reset-flag")
		return code != 0, out
	})
	members := mustExec(t, server, c.Bin.Etcdctl+" --endpoints http://127.0.0.1:2379 member list")
	if strings.Count(members, "\n") != 0 || !strings.Contains(members, ", srv, ") {
		t.Errorf("etcd members after the restore:\n%s", members)
	}

	t.Run("a wrong token is refused on a restored server", func(t *testing.T) {
		mustExec(t, server, "systemctl stop k3s")
		writeFile(t, server, "/etc/rancher/k3s/config.yaml", 0o600, fmt.Sprintf("token: another-token\ncluster-init: true\nnode-name: srv\nnode-ip: %s\n", server.Addr))
		_, _ = exec1(t, server, "timeout 15 systemctl start k3s")
		testenv.WaitFor(t, ctx, "the refusal in the log", func() (bool, string) {
			return strings.Contains(UnitLog(ctx, server, "k3s"), "bootstrap data already found and encrypted with different token"), ""
		})
		mustExec(t, server, "systemctl stop k3s")
		writeFile(t, server, "/etc/rancher/k3s/config.yaml", 0o600, fmt.Sprintf("token: %s\ncluster-init: true\nnode-name: srv\nnode-ip: %s\n", clusterToken, server.Addr))
		mustExec(t, server, "systemctl start k3s")
		waitNodeReady(t, ctx, cs, "srv")
	})

	t.Run("node password", func(t *testing.T) {
		// The agent's disk is replaced: a new password, the old hash in the cluster.
		mustExec(t, agent, "systemctl stop k3s-agent && rm -rf /etc/rancher/node")
		// k3s' own unit is Type=notify: the start waits until the agent is up,
		// which it is not while it is refused.
		_, _ = exec1(t, agent, "timeout 5 systemctl start k3s-agent")
		testenv.WaitFor(t, ctx, "the agent refused", func() (bool, string) {
			return strings.Contains(UnitLog(ctx, agent, "k3s-agent"), "Node password rejected, duplicate hostname or contents of '/etc/rancher/node/password' may not match server node-passwd entry"), ""
		})
		// Deleting the Node garbage-collects its Secret; the agent is then accepted.
		if err := cs.CoreV1().Nodes().Delete(ctx, "wrk", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitNodeReady(t, ctx, cs, "wrk")
	})
}
