package k3s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/homelab/rack/internal/atomicfile"
	"github.com/homelab/rack/internal/sleep"
	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/kube"
)

// `rack rebuild`: disaster recovery from the inventory and the last backup.
//
// Planning reads the nodes (facts, service, what server/db holds) and the
// cluster (through rack's kubeconfig, when it answers), and picks one of:
//
//   - rejoin: the cluster runs, and some nodes came back blank (same name
//     and address, nothing of k3s on them). Each is reinstalled and rejoined
//     after its stale Node, its node-password Secret (k3s would refuse the
//     new node's password) and, for a server, its stale etcd member are
//     removed. Nothing else is touched.
//   - restore: every server lost its datastore (or --restore). The first
//     server is reinstalled and restored with `k3s server --cluster-reset
//     --cluster-reset-restore-path=<snapshot>` and the original token (SQLite:
//     state.db put back with k3s stopped), then started normally; the other
//     servers' old etcd data is moved aside and they rejoin, one at a time;
//     blank agents rejoin. The snapshot is --snapshot, or the newest backup
//     whose sha256 matches its manifest; a corrupted one is refused before
//     anything is touched.
//
// The node work reuses rack up's planner and steps (PlanNode, Apply: first
// server alone, other servers one at a time, agents in parallel); rebuild
// puts its own steps around them. A restore is journaled in
// .rack/<cluster>/rebuild.json, so a rebuild that was killed midway is
// finished by running it again: until the first server runs the restored
// cluster, the restore starts over (the data on that server is rack's own
// partial restore); after, the nodes not yet rejoined are rejoined.

// Rebuild modes.
const (
	RebuildNothing = "nothing"
	RebuildRejoin  = "rejoin"
	RebuildRestore = "restore"
)

// Actions of rebuilt nodes.
const (
	ActionRestore Action = "restore"
	ActionRejoin  Action = "rejoin"
)

// RebuildOptions are `rack rebuild`'s flags.
type RebuildOptions struct {
	// Snapshot is a backup file or its manifest (--snapshot); default the
	// newest verified backup in Backups.
	Snapshot string
	// Backups is where backups are looked for (default DefaultBackupDir).
	Backups string
	// Restore restores the snapshot even though servers still hold data
	// (their datastore is moved aside, not deleted).
	Restore bool
}

// RebuildSnapshot is the backup a restore uses.
type RebuildSnapshot struct {
	Manifest   string `json:"manifest"`
	File       string `json:"file"`
	Time       string `json:"time"`
	SHA256     string `json:"sha256"`
	Datastore  string `json:"datastore"`
	K3sVersion string `json:"k3sVersion"`
}

// RebuildPlan is what `rack rebuild` does: data, printed (and confirmed)
// before anything changes; Run carries out the very same steps.
type RebuildPlan struct {
	Cluster  string           `json:"cluster"`
	Version  string           `json:"version"`
	Mode     string           `json:"mode"`
	Why      string           `json:"why"`
	Snapshot *RebuildSnapshot `json:"snapshot,omitempty"`
	// Skipped are backups passed over, with why (a corrupted one).
	Skipped []string `json:"skipped,omitempty"`
	// Local are the steps on this machine, before any node.
	Local []nodes.Step `json:"local"`
	Nodes []NodePlan   `json:"nodes"`
	// Refusals stop the rebuild before anything changes.
	Refusals []string `json:"refusals,omitempty"`
	Notes    []string `json:"notes,omitempty"`

	plan *Plan
}

// rebuildJournal records a restore in progress (.rack/<cluster>/rebuild.json).
type rebuildJournal struct {
	Manifest string `json:"manifest"`
	SHA256   string `json:"sha256"`
	Server   string `json:"server"`
	Started  string `json:"started"`
	// Restored is set once the first server runs the restored cluster.
	Restored bool `json:"restored"`
	// Nodes are the nodes the rebuild reinstalls: a restore that starts
	// over reinstalls them again (their node passwords are new, the
	// restored cluster has the old ones).
	Nodes []string `json:"nodes"`
}

func journalPath(inv *inventory.Inventory) string {
	return filepath.Join(inv.StateDir(), "rebuild.json")
}

func readJournal(inv *inventory.Inventory) (*rebuildJournal, error) {
	b, err := os.ReadFile(journalPath(inv))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var j rebuildJournal
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("%s: %w (delete it if no rebuild is in progress)", journalPath(inv), err)
	}
	return &j, nil
}

func writeJournal(inv *inventory.Inventory, j *rebuildJournal) error {
	if err := os.MkdirAll(inv.StateDir(), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(j, "", "  ") // plain fields: cannot fail
	return atomicfile.Write(journalPath(inv), append(b, '\n'), 0o600)
}

// rebuildObs is one node as rebuild planning found it.
type rebuildObs struct {
	obs Observed
	ds  datastoreState
	// node is its Node in the cluster (nil: none, or the API is down).
	node *corev1.Node
}

func (r rebuildObs) hasData() bool { return r.ds.etcd || r.ds.sqlite }

// blank: nothing of k3s is left on the node.
func (r rebuildObs) blank() bool {
	f := r.obs.Facts
	return !f.K3sInstalled && !f.K3sConfigPresent && f.K3sUnitPath == "" && !r.hasData()
}

// healthy: k3s runs and its Node is Ready at version.
func (r rebuildObs) healthy(version string) bool {
	return r.obs.Active && r.node != nil && kube.NodeReady(r.node) && r.node.Status.NodeInfo.KubeletVersion == version
}

// PlanRebuild looks at every node and the cluster and plans the rebuild.
// It changes nothing; refusals are in the plan (Refusals).
func PlanRebuild(ctx context.Context, inv *inventory.Inventory, o Options, ro RebuildOptions) (*RebuildPlan, error) {
	version := inv.Cluster.K3s.Version
	if _, err := inventory.ParseK3sVersion(version); err != nil {
		return nil, fmt.Errorf("%s: cluster.k3s.version %q is not an exact k3s release (like %s.5+k3s1)", inv.Where("cluster.k3s.version"), version, version)
	}
	servers := inv.Servers()
	if len(servers) == 0 {
		return nil, fmt.Errorf("%s has no server", inv.File)
	}
	first := servers[0]
	rp := &RebuildPlan{Cluster: inv.Cluster.Name, Version: version, Local: []nodes.Step{}, Nodes: []NodePlan{}}
	x := &run{inv: inv, opts: o}
	plan := &Plan{Cluster: inv.Cluster.Name, Version: version, Local: []nodes.Step{}, x: x, targets: map[string]nodes.Target{}}
	rp.plan = plan

	var targets []nodes.Target
	for _, n := range inv.Nodes {
		t, err := o.Resolver.Resolve(n)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", n.Name, err)
		}
		plan.targets[n.Name] = t
		targets = append(targets, t)
	}
	registered, apiUp := clusterNodes(ctx, inv)
	obs, errs := gatherForRebuild(ctx, inv, o, targets)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	for _, n := range inv.Nodes {
		if err := errs[n.Name]; err != nil {
			rp.Refusals = append(rp.Refusals, fmt.Sprintf("%s is unreachable (%v): rack cannot tell whether it came back blank; bring it up, or take it out of the inventory, and run rack rebuild again", n.Name, err))
			continue
		}
		r := obs[n.Name]
		r.node = registered[n.Name]
		r.obs.Node = r.node
		obs[n.Name] = r
	}
	if len(rp.Refusals) > 0 {
		return rp, nil
	}
	journal, err := readJournal(inv)
	if err != nil {
		return nil, err
	}

	// Which rebuild is it?
	var withData, lost []string
	for _, s := range servers {
		if obs[s.Name].hasData() {
			withData = append(withData, s.Name)
		} else {
			lost = append(lost, s.Name)
		}
	}
	firstHealthy := apiUp && obs[first.Name].healthy(version)
	switch {
	case ro.Restore:
		rp.Mode, rp.Why = RebuildRestore, "--restore: the snapshot replaces what the servers hold (their datastores are moved aside)"
	case journal != nil && !journal.Restored && !firstHealthy:
		rp.Mode, rp.Why = RebuildRestore, fmt.Sprintf("a restore started %s did not finish (%s): it starts over on %s", journal.Started, journalPath(inv), first.Name)
	case journal != nil:
		journal.Restored = true
		rp.Mode, rp.Why = RebuildRejoin, fmt.Sprintf("%s runs the restored cluster; the nodes a killed rebuild did not finish rejoin it", first.Name)
	case len(withData) == 0:
		rp.Mode, rp.Why = RebuildRestore, "every server lost its datastore ("+strings.Join(lost, ", ")+"): the cluster comes back from a snapshot"
	case !apiUp:
		rp.Refusals = append(rp.Refusals, fmt.Sprintf("%s still hold(s) the cluster's datastore but the API at %s does not answer through rack's kubeconfig: if k3s runs there, make one of them the first server in the inventory and run rack rebuild again; to discard that data (it is moved aside) and restore a snapshot, run rack rebuild --restore",
			strings.Join(withData, ", "), ServerURL(inv.Cluster.APIEndpoint)))
		return rp, nil
	default:
		rp.Mode, rp.Why = RebuildRejoin, "the cluster runs; nodes that came back blank rejoin it"
	}

	// The snapshot and the token.
	var backup *Backup
	if rp.Mode == RebuildRestore {
		backup = rp.pickSnapshot(inv, ro)
		if backup != nil {
			rp.checkSnapshot(inv, backup)
		}
	}
	token, local, refusal := rebuildToken(inv, backup, obs)
	if refusal != "" {
		rp.Refusals = append(rp.Refusals, refusal)
	}
	if len(rp.Refusals) > 0 {
		return rp, nil
	}
	plan.token = token
	rp.Local = append(rp.Local, local...)

	arts := &artifacts{bins: o.Binaries, version: version}
	desired := map[string]Desired{}
	for _, n := range inv.Nodes {
		d, err := desiredFor(ctx, inv, n, obs[n.Name].obs.Facts, token.Value, arts)
		if err != nil {
			rp.Refusals = append(rp.Refusals, n.Name+": "+err.Error())
			continue
		}
		desired[n.Name] = d
	}
	if len(rp.Refusals) > 0 {
		return rp, nil
	}

	switch rp.Mode {
	case RebuildRestore:
		rp.planRestore(inv, backup, journal, obs, desired, x)
	case RebuildRejoin:
		rp.planRejoin(inv, journal, obs, desired, x)
	}
	plan.Nodes = rp.Nodes
	plan.Local = rp.Local
	if rp.Mode == RebuildRejoin && plan.Changes() == 0 && len(rp.Refusals) == 0 {
		rp.Mode, rp.Why = RebuildNothing, "every node runs k3s and is Ready: nothing came back blank"
	}
	var unknown []string
	for name := range registered {
		if _, ok := inv.Node(name); !ok {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		rp.Notes = append(rp.Notes, fmt.Sprintf("the cluster has Node(s) %s that the inventory lacks: if those machines are gone, kubectl delete node them", strings.Join(unknown, ", ")))
	}
	return rp, nil
}

// pickSnapshot is --snapshot, verified, or the newest backup that verifies.
func (rp *RebuildPlan) pickSnapshot(inv *inventory.Inventory, ro RebuildOptions) *Backup {
	if ro.Snapshot != "" {
		b, err := ReadBackup(ro.Snapshot)
		if err != nil {
			rp.Refusals = append(rp.Refusals, fmt.Sprintf("--snapshot %s: %v; rack restores only a backup it can verify against its manifest", ro.Snapshot, err))
			return nil
		}
		if err := b.Verify(); err != nil {
			rp.Refusals = append(rp.Refusals, fmt.Sprintf("--snapshot %s: %v: nothing was changed; pick another backup with --snapshot", ro.Snapshot, err))
			return nil
		}
		return &b
	}
	dir := ro.Backups
	if dir == "" {
		dir = DefaultBackupDir(inv)
	}
	list, errs := ListBackups(dir, inv.Cluster.Name)
	for _, err := range errs {
		rp.Skipped = append(rp.Skipped, err.Error())
	}
	for i := range list {
		if err := list[i].Verify(); err != nil {
			rp.Skipped = append(rp.Skipped, err.Error())
			continue
		}
		return &list[i]
	}
	rp.Refusals = append(rp.Refusals, fmt.Sprintf("no verified backup of cluster %s in %s: take backups with rack backup, or name one with --snapshot FILE", inv.Cluster.Name, dir))
	return nil
}

// checkSnapshot refuses a snapshot that cannot restore this inventory.
func (rp *RebuildPlan) checkSnapshot(inv *inventory.Inventory, b *Backup) {
	m := b.Manifest
	rp.Snapshot = &RebuildSnapshot{Manifest: b.Path, File: b.DataPath, Time: m.Time, SHA256: m.SHA256, Datastore: m.Datastore, K3sVersion: m.K3sVersion}
	if m.Cluster != inv.Cluster.Name {
		rp.Refusals = append(rp.Refusals, fmt.Sprintf("%s is a backup of cluster %s, not %s", b.Path, m.Cluster, inv.Cluster.Name))
	}
	switch m.Datastore {
	case DatastoreEtcd:
	case DatastoreSQLite:
		if len(inv.Servers()) > 1 {
			rp.Refusals = append(rp.Refusals, fmt.Sprintf("%s is a SQLite backup (a single server's), and the inventory has %d servers: SQLite cannot be shared by several servers; restore it with one server in the inventory, then add the others", b.Path, len(inv.Servers())))
		}
	default:
		rp.Refusals = append(rp.Refusals, fmt.Sprintf("%s: unknown datastore %q", b.Path, m.Datastore))
	}
	if m.K3sVersion != "" {
		have, err1 := inventory.ParseK3sVersion(m.K3sVersion)
		want, err2 := inventory.ParseK3sVersion(inv.Cluster.K3s.Version)
		if err1 == nil && err2 == nil && have.Compare(want) > 0 {
			rp.Refusals = append(rp.Refusals, fmt.Sprintf("%s was taken with k3s %s, newer than the inventory's %s: rack never restores into an older k3s; set cluster.k3s.version to %s or newer", b.Path, m.K3sVersion, inv.Cluster.K3s.Version, m.K3sVersion))
		}
	}
	if b.TokenPath == "" {
		rp.Refusals = append(rp.Refusals, fmt.Sprintf("%s names no token file: the snapshot's secrets are encrypted with the server token it was taken with", b.Path))
	}
}

// tokenSecret is the secret part of a k3s token (K10<hash>::<user>:<secret>).
func tokenSecret(raw string) string {
	raw = strings.TrimSpace(raw)
	if rest, ok := strings.CutPrefix(raw, "K10"); ok {
		if _, creds, ok := strings.Cut(rest, "::"); ok {
			if _, secret, ok := strings.Cut(creds, ":"); ok {
				return secret
			}
			return creds
		}
	}
	return raw
}

// rebuildToken is the token the rebuilt nodes get. With a backup it must be
// the backup's (the snapshot's secrets are encrypted with it): the
// inventory's or rack's kept token must match it, and when rack keeps none
// the backup's becomes rack's (a local step). Without one it is rack's usual
// token, or, when rack lost its file, the one a running server has.
func rebuildToken(inv *inventory.Inventory, b *Backup, obs map[string]rebuildObs) (Token, []nodes.Step, string) {
	have, err := ResolveToken(inv)
	if err != nil {
		return Token{}, nil, err.Error()
	}
	keep := func(value, from string) (Token, []nodes.Step, string) {
		path := inv.State().Token()
		return Token{Value: value, Path: path}, []nodes.Step{{
			Name: "keep the cluster token from " + from + " in " + path + " (0600)",
			Why:  "rack keeps no token for this cluster and the inventory sets none; every node (and the next rack up) must use the cluster's",
			Do: func(context.Context, *nodes.Host) error {
				if _, err := os.Stat(path); err == nil {
					return nil
				}
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					return err
				}
				return atomicfile.Write(path, []byte(value+"\n"), 0o600)
			}}}, ""
	}
	if b == nil {
		if !have.Fresh {
			return have, nil, ""
		}
		for _, n := range inv.Nodes {
			if t := configToken(obs[n.Name].obs.Facts.K3sConfig); t != "" {
				return keep(t, n.Name+"'s "+ConfigPath)
			}
		}
		return Token{}, nil, fmt.Sprintf("no cluster token: the inventory sets none, %s is missing and no node still has one: restore %s from your backup (backups/%s/*.token holds it) or set cluster.k3s.token", have.Path, have.Path, inv.Cluster.Name)
	}
	st, err := os.Stat(b.TokenPath)
	if err != nil {
		return Token{}, nil, fmt.Sprintf("the backup's token file %s: %v; without the token the snapshot cannot be decrypted", b.TokenPath, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return Token{}, nil, fmt.Sprintf("%s is readable by other users (mode %v): chmod 600 %s, then run again", b.TokenPath, st.Mode().Perm(), b.TokenPath)
	}
	raw, err := os.ReadFile(b.TokenPath)
	if err != nil {
		return Token{}, nil, err.Error()
	}
	secret := tokenSecret(string(raw))
	if secret == "" {
		return Token{}, nil, fmt.Sprintf("%s is empty", b.TokenPath)
	}
	switch {
	case !have.Fresh && tokenSecret(have.Value) == secret:
		return have, nil, ""
	case !have.Fresh && inv.Cluster.K3s.Token != "":
		return Token{}, nil, fmt.Sprintf("%s: cluster.k3s.token is not the token %s was taken with (kept in %s): the restored cluster needs that one; set cluster.k3s.token to it", inv.Where("cluster.k3s.token"), b.DataPath, b.TokenPath)
	case !have.Fresh:
		return Token{}, nil, fmt.Sprintf("%s holds another token than the one %s was taken with (%s): the restored cluster needs the backup's; if the backup is the right one, move %s aside and run again (rack then keeps the backup's)", have.Path, b.DataPath, b.TokenPath, have.Path)
	}
	return keep(secret, b.TokenPath)
}

// gatherForRebuild collects, in parallel, each node's facts, service state
// and datastore.
func gatherForRebuild(ctx context.Context, inv *inventory.Inventory, o Options, targets []nodes.Target) (map[string]rebuildObs, map[string]error) {
	out, res := eachNode(ctx, targets, o.FanOut, func(ctx context.Context, h *nodes.Host) (rebuildObs, error) {
		n, _ := inv.Node(h.Target.Name)
		obs, err := observe(ctx, h, n, localDirs(inv, n))
		if err != nil {
			return rebuildObs{}, err
		}
		h.Step("probing the datastore")
		raw, err := h.Output(ctx, datastoreProbe, nodes.RunOptions{Privileged: true, Quiet: true})
		if err != nil {
			return rebuildObs{}, err
		}
		return rebuildObs{obs: obs, ds: parseDatastore(raw)}, nil
	})
	return out, failures(res)
}

// clusterNodes lists the Nodes through rack's kubeconfig; ok is false when
// the API does not answer.
func clusterNodes(ctx context.Context, inv *inventory.Inventory) (map[string]*corev1.Node, bool) {
	out := map[string]*corev1.Node{}
	kc, err := kube.LoadContext(inv.State().Kubeconfig(), inv.Cluster.Name)
	if err != nil {
		return out, false
	}
	rc, err := kc.RESTConfig()
	if err != nil {
		return out, false
	}
	rc.Timeout = 5 * time.Second
	cs, err := kube.NewClient(rc)
	if err != nil {
		return out, false
	}
	ctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return out, false
	}
	for i := range list.Items {
		out[list.Items[i].Name] = &list.Items[i]
	}
	return out, true
}

// tailNames are the names PlanNode gives the steps that (re)start k3s and
// follow it; rebuild puts its own work before them and builds them itself.
func tailNames(d Desired) map[string]bool {
	return map[string]bool{
		"restart " + ServiceName(d.Node):                    true,
		"fetch the kubeconfig":                              true,
		"wait until Ready at " + d.Version:                  true,
		"record what k3s runs from in " + nodes.AppliedPath: true,
		"set labels and taints through the API":             true,
	}
}

// installSteps are PlanNode's steps that put files in place (binary,
// config, unit, Pi and storage preparation), without the restart and what
// follows it. A node PlanNode refuses is a refusal of the rebuild.
func (rp *RebuildPlan) installSteps(d Desired, o Observed, x *run) []nodes.Step {
	np := PlanNode(d, o, x)
	if np.Action == ActionRefused {
		rp.Refusals = append(rp.Refusals, d.Node.Name+": "+strings.Join(np.Reasons, "; "))
		return nil
	}
	tail := tailNames(d)
	var out []nodes.Step
	for _, s := range np.Steps {
		if !tail[s.Name] {
			out = append(out, s)
		}
	}
	return out
}

// startSteps start k3s and prove it came up: restart, (the first server)
// fetch the kubeconfig, wait until Ready at the version, then after (extra
// steps), record what it runs from and set labels and taints.
func startSteps(d Desired, x *run, after ...nodes.Step) []nodes.Step {
	name := ServiceName(d.Node)
	steps := []nodes.Step{{Name: "restart " + name, Why: "k3s starts on the rebuilt node", Do: restart(d.Unit, name).bind(x)}}
	if d.FirstServer {
		steps = append(steps, nodes.Step{Name: "fetch the kubeconfig", Why: "rack reaches the cluster's API through the first server", Do: fetchKubeconfig().bind(x)})
	}
	steps = append(steps, nodes.Step{Name: "wait until Ready at " + d.Version, Why: "only a Ready Node at the version proves the node is back", Do: waitReady(d.Node.Name, d.Version, d.Unit, d.EtcdMember).bind(x)})
	steps = append(steps, after...)
	steps = append(steps,
		nodes.Step{Name: "record what k3s runs from in " + nodes.AppliedPath, Why: "the next rack up compares against it", Do: writeApplied(appliedFor(d)).bind(x)},
		nodes.Step{Name: "set labels and taints through the API", Why: "k3s sets only some at registration; rack sets and records the rest", Do: reconcileLabels(d.Node.Name, kube.Want{Labels: d.Node.Labels, Taints: taints(d.Node)}).bind(x)})
	return steps
}

// resetPidFile is where the foreground cluster-reset run records its pid,
// so that a later run can stop one a killed rack left behind.
const resetPidFile = "/var/lib/rancher/k3s/server/rack-cluster-reset.pid"

// stopCmdFor stops k3s (and a cluster-reset run a killed rack left) on a node.
func stopCmdFor(init, svc string) nodes.Cmd {
	stop := `systemctl stop "$1" 2>/dev/null`
	if init == InitOpenRC {
		stop = `rc-service "$1" stop 2>/dev/null`
	}
	return nodes.Sh(stop+`
p=$(cat "$2" 2>/dev/null)
if [ -n "$p" ] && tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -q -- --cluster-reset; then
  kill "$p" 2>/dev/null
  i=0; while [ -d "/proc/$p" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  kill -9 "$p" 2>/dev/null
fi
rm -f -- "$2"; true`, svc, resetPidFile)
}

func stopStep(n inventory.Node, init, why string) nodes.Step {
	svc := ServiceName(n)
	return nodes.Step{Name: "stop " + svc, Why: why, Do: func(ctx context.Context, h *nodes.Host) error {
		return h.Run(ctx, stopCmdFor(init, svc), priv)
	}}
}

// clearDatastoreStep moves server/db aside (aside=true: the user's data,
// kept as db.rack-old-<unix time>) or deletes it (rack's own partial work).
func clearDatastoreStep(aside bool, why string) nodes.Step {
	if aside {
		return nodes.Step{Name: "move " + ServerDBDir + " aside to " + ServerDBDir + ".rack-old-<time>", Why: why,
			Do: func(ctx context.Context, h *nodes.Host) error {
				return h.Run(ctx, nodes.Sh(`[ ! -e "$1" ] || mv -- "$1" "$1.rack-old-$(date +%s)"`, ServerDBDir), priv)
			}}
	}
	return nodes.Step{Name: "delete " + ServerDBDir, Why: why,
		Do: func(ctx context.Context, h *nodes.Host) error {
			return h.Run(ctx, nodes.Sh(`rm -rf -- "$1"`, ServerDBDir), priv)
		}}
}

// forgetStep deletes what the cluster remembers of a node that comes back
// blank: its Node, its node-password Secret (k3s refuses a node whose new
// password does not match it) and, for a server, its etcd member.
func forgetStep(n inventory.Node, viaServer string, x *run) nodes.Step {
	what := "its stale Node and node-password Secret"
	if n.IsServer() && viaServer != "" {
		what = "its stale Node, node-password Secret and etcd member"
	}
	return nodes.Step{Name: "delete " + what,
		Why: "the new k3s registers a new Node with a new node password (/etc/rancher/node/password), which k3s refuses while the old Secret " + nodePasswordSecretName(n.Name) + " is there",
		Do: func(ctx context.Context, h *nodes.Host) error {
			cs, err := x.client()
			if err != nil {
				return err
			}
			timeout := x.opts.readyTimeout()
			if err := deleteAndWait(ctx, timeout, "Node "+n.Name, func() error {
				return cs.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{})
			}, func() error {
				_, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
				return err
			}); err != nil {
				return err
			}
			secrets := cs.CoreV1().Secrets(metav1.NamespaceSystem)
			if err := deleteAndWait(ctx, timeout, "Secret kube-system/"+nodePasswordSecretName(n.Name), func() error {
				return secrets.Delete(ctx, nodePasswordSecretName(n.Name), metav1.DeleteOptions{})
			}, func() error {
				_, err := secrets.Get(ctx, nodePasswordSecretName(n.Name), metav1.GetOptions{})
				return err
			}); err != nil {
				return err
			}
			if n.IsServer() && viaServer != "" {
				return removeStaleMember(ctx, x, viaServer, n)
			}
			return nil
		}}
}

// nodePasswordSecretName is the Secret k3s keeps a node's password hash in.
func nodePasswordSecretName(node string) string { return strings.ToLower(node) + ".node-password.k3s" }

func deleteAndWait(ctx context.Context, timeout time.Duration, what string, del, get func() error) error {
	if err := del(); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting %s: %w", what, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := get()
		if apierrors.IsNotFound(err) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is still there %s after its deletion (a finalizer?): kubectl get it -o yaml shows what holds it", what, timeout)
		}
		if err := sleep.For(ctx, 300*time.Millisecond); err != nil {
			return err
		}
	}
}

// removeStaleMember removes n's etcd member through another server, when it
// is still listed: k3s refuses to join a server whose name an old member
// still carries ("duplicate node name found").
func removeStaleMember(ctx context.Context, x *run, via string, n inventory.Node) error {
	vn, _ := x.inv.Node(via)
	t, err := x.opts.Resolver.Resolve(vn)
	if err != nil {
		return err
	}
	h, err := nodes.Connect(ctx, t, x.opts.FanOut.Connect)
	if err != nil {
		return fmt.Errorf("reaching %s to remove %s's etcd member: %w", via, n.Name, err)
	}
	defer h.Close()
	members, err := EtcdMembers(ctx, h)
	if err != nil {
		return err
	}
	for _, m := range members {
		if !m.Is(n) {
			continue
		}
		id, err := strconv.ParseUint(m.ID, 10, 64)
		if err != nil {
			return fmt.Errorf("etcd member %s: id %q: %w", m.Name, m.ID, err)
		}
		if err := etcdMemberRemove(ctx, h, id); err != nil {
			return fmt.Errorf("removing %s's stale etcd member %s through %s: %w", n.Name, m.Name, via, err)
		}
	}
	return nil
}

// planRestore: the first server is restored, every other server rejoins
// with its old etcd data moved aside, blank agents rejoin.
func (rp *RebuildPlan) planRestore(inv *inventory.Inventory, b *Backup, journal *rebuildJournal, obs map[string]rebuildObs, desired map[string]Desired, x *run) {
	first := inv.Servers()[0]
	redo := journal != nil && !journal.Restored
	again := map[string]bool{}
	if redo {
		for _, n := range journal.Nodes {
			again[n] = true
		}
	}
	j := &rebuildJournal{Manifest: b.Path, SHA256: b.Manifest.SHA256, Server: first.Name, Started: time.Now().UTC().Format(time.RFC3339)}
	defer func() {
		for _, np := range rp.Nodes {
			if np.Changes() {
				j.Nodes = append(j.Nodes, np.Node)
			}
		}
	}()
	rp.Local = append(rp.Local, nodes.Step{Name: "journal the restore in " + journalPath(inv),
		Why: "a rebuild killed midway is finished by running it again",
		Do:  func(context.Context, *nodes.Host) error { return writeJournal(inv, j) }})
	for _, n := range inv.Nodes {
		r, d := obs[n.Name], desired[n.Name]
		np := NodePlan{Node: n.Name, Role: Role(n), Arch: d.Arch, To: d.Version, Reasons: []string{}, Steps: []nodes.Step{}, From: r.obs.Facts.K3sVersion}
		switch {
		case n.Name == first.Name:
			np.Action = ActionRestore
			np.Reasons = append(np.Reasons, "restore "+filepath.Base(b.DataPath)+" ("+b.Manifest.Time+")")
			var steps []nodes.Step
			if r.obs.Facts.K3sInstalled || r.obs.Active {
				steps = append(steps, stopStep(n, r.obs.Facts.Init, "the datastore is replaced underneath it"))
			}
			if r.hasData() {
				if redo {
					steps = append(steps, clearDatastoreStep(false, "it holds what the interrupted restore left"))
				} else {
					steps = append(steps, clearDatastoreStep(true, "the snapshot replaces it; the old one is kept aside, not deleted"))
				}
			}
			steps = append(steps, rp.installSteps(d, r.obs, x)...)
			var after []nodes.Step
			if b.Manifest.Datastore == DatastoreEtcd {
				remote := SnapshotDir + "/rack-restore-" + b.Manifest.SHA256[:12]
				steps = append(steps,
					nodes.Step{Name: "upload " + filepath.Base(b.DataPath) + " to " + remote + " (0600), sha256 verified",
						Why: "k3s restores from a file on the server", Do: uploadBackup(b, remote)},
					nodes.Step{Name: "k3s server --cluster-reset --cluster-reset-restore-path=" + remote + ", and wait for it to finish",
						Why: "k3s restores the snapshot into a fresh etcd of one member (this server), with the original token from config.yaml, then exits", Do: clusterReset(remote).bind(x)})
				after = append(after, nodes.Step{Name: "remove " + remote, Why: "the restore is done; the backup stays off the node",
					Do: func(ctx context.Context, h *nodes.Host) error { return h.Run(ctx, removeCmd(remote), priv) }})
			} else {
				steps = append(steps,
					nodes.Step{Name: "put " + filepath.Base(b.DataPath) + " back as " + SQLiteDB + " (0600), sha256 verified, k3s stopped",
						Why: "k3s' SQLite datastore is that file; k3s is not running yet", Do: placeSQLite(b)})
			}
			after = append(after, nodes.Step{Name: "mark the restore done in " + journalPath(inv), Why: "the first server runs the restored cluster",
				Do: func(context.Context, *nodes.Host) error { j.Restored = true; return writeJournal(inv, j) }})
			np.Steps = append(steps, startSteps(d, x, after...)...)
		case n.IsServer():
			np.Action = ActionRejoin
			np.Reasons = append(np.Reasons, "rejoin the restored cluster")
			var steps []nodes.Step
			if r.obs.Facts.K3sInstalled || r.obs.Active {
				steps = append(steps, stopStep(n, r.obs.Facts.Init, "its etcd belongs to the lost cluster"))
			}
			if r.hasData() {
				steps = append(steps, clearDatastoreStep(!redo && journal == nil, "its etcd data belongs to the lost cluster; it joins the restored one fresh (k3s: back up and delete server/db on each peer)"))
			}
			steps = append(steps, forgetStep(n, "", x))
			steps = append(steps, rp.installSteps(d, r.obs, x)...)
			np.Steps = append(steps, startSteps(d, x)...)
		case r.blank() || !r.obs.Facts.K3sInstalled || again[n.Name]:
			np.Action = ActionRejoin
			var steps []nodes.Step
			if r.blank() {
				np.Reasons = append(np.Reasons, "came back blank")
			} else {
				np.Reasons = append(np.Reasons, "the restore that starts over had reinstalled it: it rejoins again")
				steps = append(steps, stopStep(n, r.obs.Facts.Init, "it is reinstalled"))
			}
			steps = append(steps, forgetStep(n, "", x))
			steps = append(steps, rp.installSteps(d, r.obs, x)...)
			np.Steps = append(steps, startSteps(d, x)...)
		case r.obs.Active:
			np.Action = ActionNothing
			np.Reasons = append(np.Reasons, "still runs k3s: it reconnects to the restored cluster by itself")
		default:
			np.Action = ActionNothing
			np.Reasons = append(np.Reasons, "k3s is installed but not running: once the cluster is back, rack up starts it")
		}
		rp.Nodes = append(rp.Nodes, np)
	}
}

// planRejoin: the cluster runs; blank nodes (and, after a killed restore,
// nodes not back yet) are reinstalled and rejoin; the others are not touched.
func (rp *RebuildPlan) planRejoin(inv *inventory.Inventory, journal *rebuildJournal, obs map[string]rebuildObs, desired map[string]Desired, x *run) {
	first := inv.Servers()[0]
	version := inv.Cluster.K3s.Version
	var via string
	for _, s := range inv.Servers() {
		if obs[s.Name].healthy(version) {
			via = s.Name
			break
		}
	}
	if obs[first.Name].blank() {
		rp.Refusals = append(rp.Refusals, fmt.Sprintf("the first server %s came back blank while the cluster runs on the other servers: as the first server it would initialise a second cluster; make a running server the first in the inventory (move it to the top of nodes:), then run rack rebuild again", first.Name))
		return
	}
	for _, n := range inv.Nodes {
		r, d := obs[n.Name], desired[n.Name]
		np := NodePlan{Node: n.Name, Role: Role(n), Arch: d.Arch, To: d.Version, Reasons: []string{}, Steps: []nodes.Step{}, From: r.obs.Facts.K3sVersion}
		rebuild, why := false, ""
		switch {
		case r.blank():
			rebuild, why = true, "came back blank"
		case journal != nil && !r.healthy(version) && n.Name != first.Name:
			rebuild, why = true, "the interrupted rebuild had not brought it back"
		}
		if !rebuild {
			np.Action = ActionNothing
			if r.healthy(version) {
				np.Reasons = append(np.Reasons, "runs k3s and is Ready: not touched")
			} else {
				np.Reasons = append(np.Reasons, "k3s is installed but the node is not Ready at "+version+": rack up restarts or reconfigures it; rebuild reinstalls only nodes that came back blank")
			}
			if n.Name == first.Name {
				np.Steps = []nodes.Step{{Name: "fetch the kubeconfig", Why: "rack reaches the cluster's API through the first server", Do: fetchKubeconfig().bind(x)}}
			}
			rp.Nodes = append(rp.Nodes, np)
			continue
		}
		np.Action = ActionRejoin
		np.Reasons = append(np.Reasons, why)
		var steps []nodes.Step
		if !r.blank() {
			if r.obs.Facts.K3sInstalled || r.obs.Active {
				steps = append(steps, stopStep(n, r.obs.Facts.Init, "it is reinstalled"))
			}
			if r.hasData() {
				steps = append(steps, clearDatastoreStep(false, "it holds a partial join from the interrupted rebuild"))
			}
		}
		memberVia := ""
		if n.IsServer() && via != "" && via != n.Name {
			memberVia = via
		}
		steps = append(steps, forgetStep(n, memberVia, x))
		steps = append(steps, rp.installSteps(d, r.obs, x)...)
		np.Steps = append(steps, startSteps(d, x)...)
		rp.Nodes = append(rp.Nodes, np)
	}
	if journal != nil {
		rp.Local = append(rp.Local, nodes.Step{Name: "keep the journal " + journalPath(inv) + " until every node is back", Why: "a rebuild killed midway is finished by running it again",
			Do: func(context.Context, *nodes.Host) error { return writeJournal(inv, journal) }})
	}
}

// uploadBackup uploads the backup file, checking it against its manifest.
func uploadBackup(b *Backup, remote string) func(context.Context, *nodes.Host) error {
	return func(ctx context.Context, h *nodes.Host) error {
		if err := h.Run(ctx, mkdirCmd(filepath.Dir(remote), "0700"), priv); err != nil {
			return err
		}
		src, err := nodes.OpenSource(b.DataPath)
		if err != nil {
			return err
		}
		defer src.Close()
		sum, err := src.SHA256()
		if err != nil {
			return err
		}
		if sum != b.Manifest.SHA256 {
			return fmt.Errorf("%s changed since it was verified (sha256 %s, manifest %s): nothing was restored; run rack rebuild again", b.DataPath, sum, b.Manifest.SHA256)
		}
		_, err = h.Upload(ctx, src, remote, nodes.FileOptions{Mode: 0o600, Privileged: true})
		return err
	}
}

// placeSQLite puts a SQLite backup in place as k3s' state.db, with no
// write-ahead log beside it that would belong to another database.
func placeSQLite(b *Backup) func(context.Context, *nodes.Host) error {
	upload := uploadBackup(b, SQLiteDB)
	return func(ctx context.Context, h *nodes.Host) error {
		if err := h.Run(ctx, nodes.Sh(`install -d -m 0700 -- "$1" && rm -f -- "$2-wal" "$2-shm"`, ServerDBDir, SQLiteDB), priv); err != nil {
			return err
		}
		return upload(ctx, h)
	}
}

// clusterReset runs `k3s server --cluster-reset --cluster-reset-restore-path`
// in the foreground (k3s exits once the restore is done), bounded by
// --timeout. The token comes from config.yaml, never the command line.
func clusterReset(remote string) stepFunc {
	return func(ctx context.Context, x *run, h *nodes.Host) error {
		timeout := x.opts.readyTimeout()
		rctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		out, err := h.Output(rctx, nodes.Sh(`echo $$ > "$1" && exec "$2" server --cluster-reset "--cluster-reset-restore-path=$3" 2>&1`, resetPidFile, BinaryPath, remote),
			nodes.RunOptions{Privileged: true, Quiet: true})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if rctx.Err() != nil {
				err = fmt.Errorf("the restore did not finish within %s (--timeout)", timeout)
			}
			return fmt.Errorf("k3s server --cluster-reset: %w; the end of its output:\n    %s", err, strings.ReplaceAll(lastLines(out, 12), "\n", "\n    "))
		}
		if !strings.Contains(string(out), "restart without --cluster-reset flag now") {
			return fmt.Errorf("k3s server --cluster-reset exited without saying the reset was done; the end of its output:\n    %s", strings.ReplaceAll(lastLines(out, 12), "\n", "\n    "))
		}
		return h.Run(ctx, removeCmd(resetPidFile), priv)
	}
}

// Run carries the plan out: the local steps, then the nodes through Apply
// (first server alone, other servers one at a time, agents in parallel).
// The journal is removed once every node is back.
func (rp *RebuildPlan) Run(ctx context.Context, o Options) (*Outcome, error) {
	if len(rp.Refusals) > 0 {
		return nil, fmt.Errorf("%w: nothing was changed:\n  %s", ErrRefused, strings.Join(rp.Refusals, "\n  "))
	}
	if rp.Mode == RebuildNothing {
		return &Outcome{}, nil
	}
	for _, s := range rp.Local {
		if s.Do == nil {
			continue
		}
		if err := s.Do(ctx, nil); err != nil {
			return nil, fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	out, err := Apply(ctx, rp.plan, o)
	if err != nil {
		return out, err
	}
	if err := os.Remove(journalPath(rp.plan.x.inv)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return out, err
	}
	return out, nil
}

// Changes counts the nodes the rebuild touches.
func (rp *RebuildPlan) Changes() int { return countChanges(rp.Nodes) }

// WriteText prints the plan: what kind of rebuild and why, the snapshot,
// every node with its action, then the steps with their reasons.
func (rp *RebuildPlan) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "rebuild of cluster %s (k3s %s): %s\n  why: %s\n", rp.Cluster, rp.Version, dash(rp.Mode), rp.Why)
	if s := rp.Snapshot; s != nil {
		fmt.Fprintf(w, "snapshot: %s (%s datastore, taken %s with k3s %s, sha256 %s verified)\n", s.File, s.Datastore, s.Time, s.K3sVersion, short(s.SHA256))
	}
	for _, s := range rp.Skipped {
		fmt.Fprintf(w, "skipped: %s\n", s)
	}
	if len(rp.Refusals) > 0 {
		fmt.Fprintln(w, "refused, nothing will be changed:")
		for _, r := range rp.Refusals {
			fmt.Fprintf(w, "  %s\n", r)
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tACTION\tWHY")
	for _, np := range rp.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", np.Node, np.Role, np.Action, strings.Join(np.Reasons, "; "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := rp.plan.writeSteps(w); err != nil {
		return err
	}
	for _, n := range rp.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if rp.Mode == RebuildNothing {
		_, err := fmt.Fprintln(w, "nothing to rebuild: every node runs k3s and is Ready")
		return err
	}
	_, err := fmt.Fprintf(w, "%d node(s) to rebuild\n", rp.Changes())
	return err
}
