package k3s

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/homelab/rack/internal/atomicfile"
	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/kube"
)

// `rack backup`: the cluster's datastore, copied off a server and verified.
//
// Embedded etcd (several servers, or one with cluster-init): k3s' own
// `k3s etcd-snapshot save` on the server, downloaded, then deleted from the
// server with `k3s etcd-snapshot delete` — rack keeps backups off the node:
// k3s keeps on-demand snapshots forever, and an SD card that dies takes its
// snapshots with it.
//
// SQLite (a single server, k3s' default): k3s has no command for it; its
// docs say to copy server/db. rack copies state.db consistently: with
// SQLite's online backup API (`sqlite3 .backup`) when the sqlite3 CLI is on
// the node, k3s running on; otherwise with k3s stopped for the moment of the
// copy (the plan says so), then started again and waited on until Ready, and
// the write-ahead log merged into the copy here (CheckpointWAL).
//
// Either way the copy lands in <out>/<cluster>-<UTC time>.snapshot (.db for
// SQLite), 0600, its sha256 checked against the server's and again after it
// was written, beside the server token a restore needs (<same>.token, 0600:
// the snapshot's secrets are encrypted with it; never printed) and, written
// last, the manifest <same>.json. --keep N prunes older backups, never the
// newest.

// Paths of k3s' datastore on a server.
const (
	ServerDBDir     = "/var/lib/rancher/k3s/server/db"
	SnapshotDir     = ServerDBDir + "/snapshots"
	SQLiteDB        = ServerDBDir + "/state.db"
	ServerTokenPath = "/var/lib/rancher/k3s/server/token"
	// backupWorkDir holds rack's copy of state.db until it is downloaded.
	backupWorkDir = ServerDBDir + "/rack-backup"
)

// Datastores and the ways rack backs them up.
const (
	DatastoreEtcd   = "etcd"
	DatastoreSQLite = "sqlite"

	MethodEtcdSnapshot  = "k3s etcd-snapshot save"
	MethodSQLiteOnline  = "sqlite3 online backup"
	MethodSQLiteStopped = "copy with k3s stopped"
)

// snapshotBaseName is the --name rack gives k3s: files are rack-<node>-<unix time>.
const snapshotBaseName = "rack"

// BackupManifest describes one backup; it is written beside it as <base>.json.
type BackupManifest struct {
	Cluster    string   `json:"cluster"`
	K3sVersion string   `json:"k3sVersion"`
	Servers    []string `json:"servers"`
	// Time is when the backup was taken, RFC 3339 UTC.
	Time string `json:"time"`
	// SHA256 is the hex sha256 of File.
	SHA256 string `json:"sha256"`
	// File is the backup's file name, in the manifest's folder.
	File      string `json:"file"`
	Size      int64  `json:"size"`
	Datastore string `json:"datastore"`
	Method    string `json:"method"`
	// Node is the server it was taken on.
	Node string `json:"node"`
	// TokenFile holds the server token the backup was taken with (0600).
	TokenFile string `json:"tokenFile"`
}

// DefaultBackupDir is backups/<cluster>/ beside the inventory.
func DefaultBackupDir(inv *inventory.Inventory) string {
	return filepath.Join(inv.Dir(), "backups", inv.Cluster.Name)
}

// BackupOptions are `rack backup`'s flags.
type BackupOptions struct {
	// Out is the folder (default DefaultBackupDir).
	Out string
	// Keep prunes all but the newest Keep backups of the cluster there; 0 keeps all.
	Keep int
	// Node is the server to take the backup on (default: the first server
	// that answers and runs k3s).
	Node string
	// Now is the backup's time (default time.Now).
	Now func() time.Time
}

// BackupPlan is what `rack backup` does: data, printed before it runs.
type BackupPlan struct {
	Cluster    string       `json:"cluster"`
	Node       string       `json:"node"`
	Datastore  string       `json:"datastore"`
	Method     string       `json:"method"`
	K3sVersion string       `json:"k3sVersion"`
	Out        string       `json:"out"`
	File       string       `json:"file"`
	Keep       int          `json:"keep,omitempty"`
	Steps      []nodes.Step `json:"steps"`
	// Notes say what the user should know (k3s is stopped, …).
	Notes []string `json:"notes,omitempty"`

	inv    *inventory.Inventory
	opts   Options
	target nodes.Target
	time   time.Time
	b      *backupRun
}

// backupRun is what the steps share while they run.
type backupRun struct {
	token    []byte
	remote   []string // files to download, in order: state.db (and its log) or the snapshot
	local    string
	transfer nodes.Transfer
}

// PlanBackup finds the server to back up and how. It reads, never writes.
func PlanBackup(ctx context.Context, inv *inventory.Inventory, o Options, bo BackupOptions) (*BackupPlan, error) {
	if bo.Keep < 0 {
		return nil, fmt.Errorf("--keep %d: give the number of backups to keep (0 keeps all)", bo.Keep)
	}
	now := time.Now
	if bo.Now != nil {
		now = bo.Now
	}
	out := bo.Out
	if out == "" {
		out = DefaultBackupDir(inv)
	}
	var candidates []inventory.Node
	if bo.Node != "" {
		n, ok := inv.Node(bo.Node)
		if !ok || !n.IsServer() {
			return nil, fmt.Errorf("--node %s: not a server in %s; a backup is taken on a server", bo.Node, inv.File)
		}
		candidates = []inventory.Node{n}
	} else {
		candidates = inv.Servers()
	}
	if len(candidates) == 0 {
		return nil, fmt.Errorf("%s has no server to take a backup on", inv.File)
	}
	var tried []string
	for _, n := range candidates {
		p, err := planBackupOn(ctx, inv, o, n)
		if err == nil {
			p.Out, p.Keep, p.time = out, bo.Keep, now().UTC()
			ext := ".snapshot"
			if p.Datastore == DatastoreSQLite {
				ext = ".db"
			}
			p.File = inv.Cluster.Name + "-" + p.time.Format("20060102T150405Z") + ext
			p.b.local = filepath.Join(out, p.File)
			p.Steps = append(p.Steps, nodes.Step{Name: "download it to " + p.b.local + " (0600), sha256 verified against the server's",
				Why: "the backup's place is off the node", Do: p.download})
			p.Steps = append(p.Steps, p.cleanupStep())
			return p, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		tried = append(tried, err.Error())
	}
	return nil, fmt.Errorf("no server to take the backup on:\n  %s", strings.Join(tried, "\n  "))
}

// datastoreProbe reports, in one round trip, what server/db holds and
// whether the sqlite3 CLI works.
var datastoreProbe = nodes.Sh(`d=$1
[ -d "$d/etcd" ] && echo etcd=1
[ -f "$d/state.db" ] && echo sqlite=1
[ -e "$d/reset-flag" ] && echo reset=1
sqlite3 -version >/dev/null 2>&1 && echo sqlite3=1
true`, ServerDBDir)

type datastoreState struct{ etcd, sqlite, reset, sqlite3 bool }

func parseDatastore(out []byte) datastoreState {
	var d datastoreState
	for _, l := range strings.Split(string(out), "\n") {
		switch strings.TrimSpace(l) {
		case "etcd=1":
			d.etcd = true
		case "sqlite=1":
			d.sqlite = true
		case "reset=1":
			d.reset = true
		case "sqlite3=1":
			d.sqlite3 = true
		}
	}
	return d
}

func planBackupOn(ctx context.Context, inv *inventory.Inventory, o Options, n inventory.Node) (*BackupPlan, error) {
	t, err := o.Resolver.Resolve(n)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.Name, err)
	}
	h, err := nodes.Connect(ctx, t, o.FanOut.Connect)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.Name, err)
	}
	defer h.Close()
	f, err := h.Gather(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.Name, err)
	}
	probe, err := h.Output(ctx, probeCmd(ServiceName(n), envPathFor(n, f.Init), nil), nodes.RunOptions{Privileged: true, Quiet: true})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.Name, err)
	}
	raw, err := h.Output(ctx, datastoreProbe, nodes.RunOptions{Privileged: true, Quiet: true})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.Name, err)
	}
	ds := parseDatastore(raw)
	active := parseProbe(probe, nil).Active
	if !f.K3sInstalled || !active {
		return nil, fmt.Errorf("%s: k3s is not running there (installed: %v): start it (rack up) or name another server with --node", n.Name, f.K3sInstalled)
	}
	unit, err := ServiceUnit(n, f.Init)
	if err != nil {
		return nil, err
	}
	p := &BackupPlan{Cluster: inv.Cluster.Name, Node: n.Name, K3sVersion: f.K3sVersion, inv: inv, opts: o, target: t, b: &backupRun{}}
	p.Steps = []nodes.Step{{Name: "read the server token from " + ServerTokenPath,
		Why: "a restore needs the token the snapshot's secrets are encrypted with; rack keeps it 0600 beside the backup and never prints it",
		Do:  p.readToken}}
	switch {
	case ds.etcd:
		p.Datastore, p.Method = DatastoreEtcd, MethodEtcdSnapshot
		p.Steps = append(p.Steps, nodes.Step{Name: "k3s etcd-snapshot save --name " + snapshotBaseName + " --dir " + SnapshotDir,
			Why: "k3s' own consistent snapshot of its embedded etcd, taken on the running server", Do: p.etcdSnapshot})
	case ds.sqlite && ds.sqlite3:
		p.Datastore, p.Method = DatastoreSQLite, MethodSQLiteOnline
		p.Steps = append(p.Steps, nodes.Step{Name: "copy " + SQLiteDB + " with SQLite's online backup (sqlite3 .backup) and check the copy's integrity",
			Why: "k3s runs SQLite here (a single server) and has no snapshot command for it; the online backup is consistent while k3s keeps running",
			Do:  p.sqliteOnline})
	case ds.sqlite:
		p.Datastore, p.Method = DatastoreSQLite, MethodSQLiteStopped
		p.Notes = append(p.Notes, fmt.Sprintf("k3s on %s is stopped for the moment of the copy (no sqlite3 on the node for an online backup; apt-get install sqlite3 avoids it): the API is down for that moment, running pods are not touched", n.Name))
		p.Steps = append(p.Steps,
			nodes.Step{Name: "stop k3s for the moment of the copy", Why: "no sqlite3 on the node for an online backup: a copy of a live SQLite database may catch a half-written transaction",
				Do: func(ctx context.Context, h *nodes.Host) error { return h.Run(ctx, unit.Stop, priv) }},
			nodes.Step{Name: "copy " + SQLiteDB + " and its write-ahead log aside", Why: "k3s stays down only as long as a local copy takes", Do: p.sqliteCopyStopped},
			nodes.Step{Name: "start k3s", Why: "the copy is taken", Do: restart(unit, ServiceName(n)).bind(&run{inv: inv, opts: o})},
			nodes.Step{Name: "wait until Ready", Why: "the backup leaves the server as it found it", Do: p.waitReady})
	default:
		return nil, fmt.Errorf("%s: neither %s/etcd nor %s exists: the server has no datastore to back up (k3s not started yet?)", n.Name, ServerDBDir, SQLiteDB)
	}
	return p, nil
}

func (p *BackupPlan) cleanupStep() nodes.Step {
	if p.Method == MethodEtcdSnapshot {
		return nodes.Step{Name: "delete the snapshot from the server (k3s etcd-snapshot delete)",
			Why: "k3s keeps on-demand snapshots forever and the SD card is small; the backup lives off the node",
			Do: func(ctx context.Context, h *nodes.Host) error {
				if len(p.b.remote) == 0 {
					return nil
				}
				return h.Run(ctx, nodes.Sh(`k3s etcd-snapshot delete --dir "$1" "$2"`, SnapshotDir, filepath.Base(p.b.remote[0])), nodes.RunOptions{Privileged: true, Quiet: true})
			}}
	}
	return nodes.Step{Name: "remove rack's copy from " + backupWorkDir, Why: "it was only needed for the download",
		Do: func(ctx context.Context, h *nodes.Host) error {
			return h.Run(ctx, nodes.Sh(`rm -rf -- "$1"`, backupWorkDir), priv)
		}}
}

func (p *BackupPlan) readToken(ctx context.Context, h *nodes.Host) error {
	b, err := h.Output(ctx, nodes.Sh(`cat -- "$1"`, ServerTokenPath), nodes.RunOptions{Privileged: true, Quiet: true})
	if err != nil {
		return fmt.Errorf("%s: reading %s (k3s writes it when the server starts): %w", h.Target.Name, ServerTokenPath, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return fmt.Errorf("%s: %s is empty", h.Target.Name, ServerTokenPath)
	}
	p.b.token = []byte(tok + "\n")
	return nil
}

var (
	snapshotSaved  = regexp.MustCompile(`Snapshot (\S+) saved`)
	snapshotSaving = regexp.MustCompile(`Saving etcd snapshot to (\S+)`)
)

// etcdSnapshot runs k3s etcd-snapshot save and finds the file it wrote in
// its output ("Snapshot NAME saved.").
func (p *BackupPlan) etcdSnapshot(ctx context.Context, h *nodes.Host) error {
	out, err := h.Output(ctx, nodes.Sh(`k3s etcd-snapshot save --name "$1" --dir "$2" 2>&1`, snapshotBaseName, SnapshotDir), nodes.RunOptions{Privileged: true, Quiet: true})
	if err != nil {
		return fmt.Errorf("%s: k3s etcd-snapshot save: %w: %s", h.Target.Name, err, lastLines(out, 5))
	}
	var path string
	if m := snapshotSaved.FindSubmatch(out); m != nil {
		path = SnapshotDir + "/" + filepath.Base(string(m[1]))
	} else if m := snapshotSaving.FindSubmatch(out); m != nil {
		path = string(m[1])
	} else {
		return fmt.Errorf("%s: k3s etcd-snapshot save did not say which file it wrote: %s", h.Target.Name, lastLines(out, 5))
	}
	p.b.remote = []string{path}
	return nil
}

func (p *BackupPlan) sqliteOnline(ctx context.Context, h *nodes.Host) error {
	dst := backupWorkDir + "/state.db"
	err := h.Run(ctx, nodes.Sh(`db=$1 dir=$2 out=$3
rm -rf -- "$dir" && install -d -m 0700 -- "$dir" &&
sqlite3 "$db" ".timeout 30000" ".backup $out" &&
chmod 600 -- "$out" &&
ok=$(sqlite3 "$out" "PRAGMA integrity_check") &&
if [ "$ok" != ok ]; then echo "integrity check of the copy: $ok" >&2; exit 1; fi`, SQLiteDB, backupWorkDir, dst), nodes.RunOptions{Privileged: true, Quiet: true})
	if err != nil {
		return fmt.Errorf("%s: sqlite3 online backup of %s: %w", h.Target.Name, SQLiteDB, err)
	}
	p.b.remote = []string{dst}
	return nil
}

func (p *BackupPlan) sqliteCopyStopped(ctx context.Context, h *nodes.Host) error {
	out, err := h.Output(ctx, nodes.Sh(`db=$1 dir=$2
rm -rf -- "$dir" && install -d -m 0700 -- "$dir" &&
cp -p -- "$db" "$dir/state.db" &&
if [ -s "$db-wal" ]; then cp -p -- "$db-wal" "$dir/state.db-wal" && echo wal=1; fi; true`, SQLiteDB, backupWorkDir), nodes.RunOptions{Privileged: true, Quiet: true})
	if err != nil {
		return fmt.Errorf("%s: copying %s: %w", h.Target.Name, SQLiteDB, err)
	}
	p.b.remote = []string{backupWorkDir + "/state.db"}
	if strings.Contains(string(out), "wal=1") {
		p.b.remote = append(p.b.remote, backupWorkDir+"/state.db-wal")
	}
	return nil
}

func (p *BackupPlan) waitReady(ctx context.Context, h *nodes.Host) error {
	kc, err := kube.LoadContext(p.inv.State().Kubeconfig(), p.inv.Cluster.Name)
	if err != nil {
		return err
	}
	cs, err := kc.Clientset()
	if err != nil {
		return err
	}
	return kube.WaitReady(ctx, cs, h.Target.Name, "", false, p.opts.readyTimeout())
}

// download copies the backup here; Download checks its sha256 against the
// server's and writes it atomically. A write-ahead log is merged in.
func (p *BackupPlan) download(ctx context.Context, h *nodes.Host) error {
	if len(p.b.remote) == 0 {
		return errors.New("no backup file was made on the server")
	}
	if err := os.MkdirAll(p.Out, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", p.Out, err)
	}
	tr, err := h.Download(ctx, p.b.remote[0], p.b.local, nodes.FileOptions{Mode: 0o600, Privileged: true})
	if err != nil {
		return err
	}
	p.b.transfer = tr
	if len(p.b.remote) < 2 {
		return nil
	}
	walLocal := p.b.local + ".wal"
	defer os.Remove(walLocal)
	if _, err := h.Download(ctx, p.b.remote[1], walLocal, nodes.FileOptions{Mode: 0o600, Privileged: true}); err != nil {
		return err
	}
	db, err := os.ReadFile(p.b.local)
	if err != nil {
		return err
	}
	wal, err := os.ReadFile(walLocal)
	if err != nil {
		return err
	}
	merged, err := CheckpointWAL(db, wal)
	if err != nil {
		return fmt.Errorf("merging %s-wal into the copy: %w", SQLiteDB, err)
	}
	if err := atomicfile.Write(p.b.local, merged, 0o600); err != nil {
		return err
	}
	sum := sha256.Sum256(merged)
	p.b.transfer.SHA256, p.b.transfer.Size = hex.EncodeToString(sum[:]), int64(len(merged))
	return nil
}

// Run takes the backup, then writes the token file and, last, the manifest,
// and prunes (--keep). Output goes through o.FanOut.Progress.
func (p *BackupPlan) Run(ctx context.Context) (*BackupManifest, error) {
	fo := p.opts.FanOut
	res := nodes.FanOut(ctx, []nodes.Target{p.target}, fo, func(ctx context.Context, h *nodes.Host) error {
		return nodes.RunSteps(ctx, h, p.Steps)
	})
	if err := nodes.Errors(res); err != nil {
		return nil, err
	}
	base := strings.TrimSuffix(p.File, filepath.Ext(p.File))
	tokenFile := base + ".token"
	if err := atomicfile.Write(filepath.Join(p.Out, tokenFile), p.b.token, 0o600); err != nil {
		return nil, fmt.Errorf("keep the server token in %s: %w", filepath.Join(p.Out, tokenFile), err)
	}
	// End to end: what landed on this disk is what left the server.
	sum, size, err := fileSHA256(p.b.local)
	if err != nil {
		return nil, err
	}
	if sum != p.b.transfer.SHA256 {
		return nil, fmt.Errorf("%s: sha256 %s after writing, but %s was received: the disk is failing? take the backup again", p.b.local, sum, p.b.transfer.SHA256)
	}
	var servers []string
	for _, s := range p.inv.Servers() {
		servers = append(servers, s.Name)
	}
	m := &BackupManifest{Cluster: p.Cluster, K3sVersion: p.K3sVersion, Servers: servers, Time: p.time.Format(time.RFC3339),
		SHA256: sum, File: p.File, Size: size, Datastore: p.Datastore, Method: p.Method, Node: p.Node, TokenFile: tokenFile}
	data, _ := json.MarshalIndent(m, "", "  ") // only plain fields: cannot fail
	if err := atomicfile.Write(filepath.Join(p.Out, base+".json"), append(data, '\n'), 0o600); err != nil {
		return nil, err
	}
	if p.Keep > 0 {
		if _, err := PruneBackups(p.Out, p.Cluster, p.Keep); err != nil {
			return m, err
		}
	}
	return m, nil
}

func fileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Backup is a backup found in a folder: its manifest and where it is.
type Backup struct {
	Manifest BackupManifest
	// Path is the manifest's path; DataPath and TokenPath are beside it.
	Path, DataPath, TokenPath string
	Time                      time.Time
}

// ListBackups reads the manifests of cluster's backups in dir, newest first.
// Manifests that cannot be read are returned as errors beside the list.
func ListBackups(dir, cluster string) ([]Backup, []error) {
	paths, _ := filepath.Glob(filepath.Join(dir, cluster+"-*.json"))
	var out []Backup
	var errs []error
	for _, p := range paths {
		b, err := ReadBackup(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if b.Manifest.Cluster != cluster {
			continue
		}
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	return out, errs
}

// ReadBackup reads a manifest (or the manifest beside a backup file).
func ReadBackup(path string) (Backup, error) {
	if !strings.HasSuffix(path, ".json") {
		path = strings.TrimSuffix(path, filepath.Ext(path)) + ".json"
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Backup{}, fmt.Errorf("%s: the backup's manifest: %w", path, err)
	}
	var m BackupManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return Backup{}, fmt.Errorf("%s: %w", path, err)
	}
	if m.File == "" || m.SHA256 == "" || m.Cluster == "" || filepath.Base(m.File) != m.File || (m.TokenFile != "" && filepath.Base(m.TokenFile) != m.TokenFile) {
		return Backup{}, fmt.Errorf("%s: not a rack backup manifest (cluster, file and sha256 are required, files are names in its folder)", path)
	}
	t, err := time.Parse(time.RFC3339, m.Time)
	if err != nil {
		return Backup{}, fmt.Errorf("%s: time %q: %w", path, m.Time, err)
	}
	dir := filepath.Dir(path)
	b := Backup{Manifest: m, Path: path, DataPath: filepath.Join(dir, m.File), Time: t}
	if m.TokenFile != "" {
		b.TokenPath = filepath.Join(dir, m.TokenFile)
	}
	return b, nil
}

// Verify checks the backup file against its manifest's sha256.
func (b Backup) Verify() error {
	sum, _, err := fileSHA256(b.DataPath)
	if err != nil {
		return err
	}
	if sum != b.Manifest.SHA256 {
		return fmt.Errorf("%s is corrupted: its sha256 is %s, its manifest %s says %s", b.DataPath, sum, filepath.Base(b.Path), b.Manifest.SHA256)
	}
	return nil
}

// PruneBackups removes all but the newest keep backups of cluster in dir
// (their file, token and manifest) and returns the manifests removed. The
// newest is never removed.
func PruneBackups(dir, cluster string, keep int) ([]string, error) {
	if keep < 1 {
		keep = 1
	}
	list, _ := ListBackups(dir, cluster)
	var removed []string
	for _, b := range list[min(keep, len(list)):] {
		for _, p := range []string{b.DataPath, b.TokenPath, b.Path} {
			if p == "" {
				continue
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return removed, err
			}
		}
		removed = append(removed, b.Path)
	}
	return removed, nil
}

// WriteText prints the plan.
func (p *BackupPlan) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "backup of cluster %s: %s datastore on %s (k3s %s), %s\n", p.Cluster, p.Datastore, p.Node, p.K3sVersion, p.Method)
	for _, s := range p.Steps {
		fmt.Fprintf(w, "  %s: %s\n", p.Node, s.Name)
		if s.Why != "" {
			fmt.Fprintf(w, "      why: %s\n", s.Why)
		}
	}
	fmt.Fprintf(w, "  here: keep the server token in %s (0600), write the manifest %s\n",
		filepath.Join(p.Out, strings.TrimSuffix(p.File, filepath.Ext(p.File))+".token"),
		filepath.Join(p.Out, strings.TrimSuffix(p.File, filepath.Ext(p.File))+".json"))
	if p.Keep > 0 {
		fmt.Fprintf(w, "  here: keep the newest %d backup(s) of %s in %s, remove older ones\n", p.Keep, p.Cluster, p.Out)
	}
	for _, n := range p.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	return nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
