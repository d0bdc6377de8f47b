package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/homelab/rack/internal/fakek3s/cpfile"
)

// What k3s does for backup and restore of its embedded etcd, on the real
// etcd a fake server runs (docs.k3s.io "etcd-snapshot" and "Backup and
// Restore"; k3s' pkg/etcd and pkg/cluster):
//
//	k3s etcd-snapshot save [--name N] [--dir D]
//	    writes D/N-<node>-<unix time> (default D <data-dir>/server/db/snapshots,
//	    N on-demand) with `etcdctl snapshot save` against the local member;
//	    logs "Saving etcd snapshot to PATH" and "Snapshot NAME saved."
//	k3s etcd-snapshot ls|list|l      Name, Location (file://…), Size, Created
//	k3s etcd-snapshot delete NAME…   "Snapshot NAME deleted."
//	k3s etcd-snapshot prune [--name N] [--snapshot-retention R]
//	    on a server without etcd (SQLite): fatal "Error: see server log for
//	    details: etcd datastore disabled", exit 1.
//
//	k3s server --cluster-reset [--cluster-reset-restore-path FILE]
//	    with FILE: moves <db>/etcd aside to <db>/etcd-old-<unix time>,
//	    restores FILE into a fresh <db>/etcd (`etcdutl snapshot restore`,
//	    one member: this node); without: restarts the existing etcd as a
//	    new one-member cluster (--force-new-cluster), refused when
//	    <db>/reset-flag exists (a reset already happened). Either way it
//	    writes <db>/reset-flag, waits for etcd to be its only member, checks
//	    the token against the cluster's bootstrap record (k3s decrypts its
//	    bootstrap data with the token: a wrong one is fatal, "bootstrap data
//	    already found and encrypted with different token"), logs "Managed
//	    etcd cluster membership has been reset, restart without
//	    --cluster-reset flag now. …" and exits 0. As k3s does when it
//	    restores, it starts no API server for that.
//
// The next normal start removes reset-flag and deletes this node's
// node-password Secret (see nodepassword.go), as k3s does after a restore.
//
// Where the fake differs: no compression (--snapshot-compress is refused),
// no S3, and --cluster-reset on a server that has no etcd at all is refused
// (k3s would start normally on SQLite and ignore the flag).

const (
	defaultSnapshotName = "on-demand"
	resetFlagName       = "reset-flag"
	resetDoneMessage    = "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now. Backup and delete ${datadir}/server/db on each peer etcd server and rejoin the nodes"
)

// recordKey is where kube-apiserver keeps the cluster record (a ConfigMap)
// in etcd. Its protobuf value holds the token's hash as plain text.
const recordKey = "/registry/configmaps/" + clusterNamespace + "/" + clusterRecord

func dataDirOf(s *settings) string {
	if d := s.str("data-dir"); d != "" {
		return d
	}
	return "/var/lib/rancher/k3s"
}

func dbDirOf(s *settings) string { return filepath.Join(dataDirOf(s), "server", "db") }

func hasEtcd(s *settings) bool {
	st, err := os.Stat(filepath.Join(dbDirOf(s), "etcd"))
	return err == nil && st.IsDir()
}

// snapshotBoolFlags are the etcd-snapshot flags that take no value.
var snapshotBoolFlags = toSet(`debug s3 etcd-s3 snapshot-compress etcd-snapshot-compress s3-insecure etcd-s3-insecure s3-skip-ssl-verify etcd-s3-skip-ssl-verify`)

// runEtcdSnapshot is `k3s etcd-snapshot [flags] SUBCOMMAND [flags] [args]`.
// Flags may come before or after the subcommand, as with urfave/cli.
func runEtcdSnapshot(args []string, stdout io.Writer, log *logger) int {
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--help" || a == "-h" {
			snapshotUsage(stdout)
			return 0
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			rest = append(rest, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") || snapshotBoolFlags[name] {
			continue
		}
		if i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	sub, names := "save", []string(nil) // a bare `k3s etcd-snapshot` saves, as it did before the subcommands
	if len(rest) > 0 {
		sub, names = rest[0], rest[1:]
	}
	// Every flag of the subcommand may also be written with etcd-.
	for i, f := range flags {
		if strings.HasPrefix(f, "-") {
			name := strings.TrimLeft(f, "-")
			k, v, hasV := strings.Cut(name, "=")
			if _, short := shortFlags[k]; short && len(k) == 1 {
				continue
			}
			if !strings.HasPrefix(k, "etcd-") && k != "name" && k != "dir" && k != "data-dir" && k != "node-name" && k != "config" && k != "debug" {
				k = "etcd-" + k
			}
			if k == "dir" {
				k = "etcd-snapshot-dir"
			}
			if hasV {
				flags[i] = "--" + k + "=" + v
			} else {
				flags[i] = "--" + k
			}
		}
	}
	s, err := loadSettings(flags, func(string, ...any) {})
	if err != nil {
		log.fatalf("%v", err)
		return 1
	}
	if s.bool("etcd-snapshot-compress") {
		log.fatalf("the fake k3s does not compress snapshots (--snapshot-compress)")
		return 1
	}
	if s.bool("etcd-s3") {
		log.fatalf("the fake k3s has no S3 (--s3)")
		return 1
	}
	switch sub {
	case "save":
		if len(names) > 0 {
			log.fatalf("command save does not take any arguments")
			return 1
		}
		err = snapshotSave(s, log)
	case "ls", "list", "l":
		err = snapshotList(s, stdout)
	case "delete":
		err = snapshotDelete(s, names, log)
	case "prune":
		err = snapshotPrune(s, log)
	default:
		fmt.Fprintf(stdout, "No help topic for '%s'\n", sub)
		return 3
	}
	if err != nil {
		log.fatalf("%v", err)
		return 1
	}
	return 0
}

func snapshotUsage(w io.Writer) {
	fmt.Fprint(w, `NAME:
   k3s etcd-snapshot - Manage etcd snapshots

USAGE:
   k3s etcd-snapshot command [command options] [arguments...]

COMMANDS:
   delete       Delete given snapshot(s)
   ls, list, l  List snapshots
   prune        Remove snapshots that match the name prefix that exceed the configured retention count
   save         Trigger an immediate etcd snapshot

OPTIONS:
   --name value                 Set the base name of the etcd on-demand snapshot, appended with UNIX timestamp (default: "on-demand")
   --dir value                  Directory to save etcd on-demand snapshot (default: ${data-dir}/db/snapshots)
   --snapshot-retention value   Number of snapshots to retain (default: 5)
   --data-dir value, -d value   Folder to hold state (default: /var/lib/rancher/k3s)
   --node-name value            Node name
`)
}

// errDatastoreDisabled is what k3s says when the server runs SQLite.
var errDatastoreDisabled = errors.New("Error: see server log for details: etcd datastore disabled")

func snapshotDir(s *settings) string {
	if d := s.str("etcd-snapshot-dir"); d != "" {
		return d
	}
	return filepath.Join(dbDirOf(s), "snapshots")
}

func nodeNameOf(s *settings) (string, error) {
	if n := s.str("node-name"); n != "" {
		return strings.ToLower(n), nil
	}
	h, err := os.Hostname()
	return strings.ToLower(h), err
}

func etcdctlBin() (string, error) {
	cp, err := cpfile.Read(controlPlaneFile)
	if err != nil {
		return "", fmt.Errorf("fake k3s: reading the test control plane description: %w", err)
	}
	if cp.Bin.Etcdctl == "" {
		return "", errors.New("fake k3s: the test rack gave no path for etcdctl")
	}
	return cp.Bin.Etcdctl, nil
}

// snapshotSave takes a snapshot of the local etcd member.
func snapshotSave(s *settings, log *logger) error {
	if !hasEtcd(s) {
		return errDatastoreDisabled
	}
	bin, err := etcdctlBin()
	if err != nil {
		return err
	}
	node, err := nodeNameOf(s)
	if err != nil {
		return err
	}
	base := s.str("name")
	if base == "" {
		base = defaultSnapshotName
	}
	dir := snapshotDir(s)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("failed to get etcd-snapshot-dir: %w", err)
	}
	name := fmt.Sprintf("%s-%s-%d", base, node, time.Now().Round(time.Second).Unix())
	path := filepath.Join(dir, name)
	log.infof("Saving etcd snapshot to %s", path)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := etcdctl(ctx, bin, "http://127.0.0.1:"+etcdClientPort, "snapshot", "save", path); err != nil {
		log.errorf("Failed to take etcd snapshot: %v: %s", err, out)
		return fmt.Errorf("Error: see server log for details: failed to save snapshot: %v", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return err
	}
	log.infof("Snapshot %s saved.", name)
	return nil
}

type snapshotFile struct {
	name, path string
	size       int64
	created    time.Time
}

func listSnapshots(s *settings, prefix string) ([]snapshotFile, error) {
	dir := snapshotDir(s)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []snapshotFile
	for _, e := range ents {
		if e.IsDir() || strings.HasSuffix(e.Name(), ".part") || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, snapshotFile{name: e.Name(), path: filepath.Join(dir, e.Name()), size: info.Size(), created: info.ModTime().UTC()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

func snapshotList(s *settings, stdout io.Writer) error {
	if !hasEtcd(s) {
		return errDatastoreDisabled
	}
	files, err := listSnapshots(s, "")
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 1, ' ', 0)
	fmt.Fprint(w, "Name\tLocation\tSize\tCreated\n")
	for _, f := range files {
		fmt.Fprintf(w, "%s\tfile://%s\t%d\t%s\n", f.name, f.path, f.size, f.created.Format(time.RFC3339))
	}
	return w.Flush()
}

func snapshotDelete(s *settings, names []string, log *logger) error {
	if len(names) == 0 {
		return errors.New("no snapshots given for removal")
	}
	if !hasEtcd(s) {
		return errDatastoreDisabled
	}
	dir := snapshotDir(s)
	for _, n := range names {
		if filepath.Base(n) != n || n == "." || n == ".." {
			return errors.New("invalid snapshot name: path traversal not allowed")
		}
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("snapshot %s not found in %s", n, dir)
			}
			return err
		}
		log.infof("Snapshot %s deleted.", n)
	}
	return nil
}

func snapshotPrune(s *settings, log *logger) error {
	if !hasEtcd(s) {
		return errDatastoreDisabled
	}
	keep := 5
	if v := s.str("etcd-snapshot-retention"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("invalid snapshot retention %q", v)
		}
		keep = n
	}
	base := s.str("name")
	if base == "" {
		base = defaultSnapshotName
	}
	files, err := listSnapshots(s, base+"-")
	if err != nil {
		return err
	}
	sort.Slice(files, func(i, j int) bool { return files[i].created.After(files[j].created) })
	for _, f := range files[min(keep, len(files)):] {
		log.infof("Removing local snapshot %s", f.path)
		if err := os.Remove(f.path); err != nil {
			return err
		}
	}
	return nil
}

// resetPreflight runs before a server starts: it carries out
// --cluster-reset (done: the process ends with code) and refuses a restore
// path without it, as k3s does.
func resetPreflight(args []string, log *logger) (code int, done bool) {
	s, err := loadSettings(args, func(string, ...any) {})
	if err != nil {
		return 0, false // runNode reports it
	}
	restore := s.str("cluster-reset-restore-path")
	if !s.bool("cluster-reset") {
		if restore != "" {
			log.fatalf("invalid flag use; --cluster-reset required with --cluster-reset-restore-path")
			return 1, true
		}
		return 0, false
	}
	log.infof("Starting k3s %s (%s)", version, commit)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := clusterReset(ctx, s, restore, log); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			log.fatalf("%s", ee.msg)
		} else {
			log.fatalf("%v", err)
		}
		return 1, true
	}
	log.infof("%s", resetDoneMessage)
	return 0, true
}

// clusterReset restores a snapshot (or resets the existing etcd) into a
// one-member cluster of this node, checks the token against the restored
// bootstrap record, and stops.
func clusterReset(ctx context.Context, s *settings, restore string, log *logger) error {
	cp, err := cpfile.Read(controlPlaneFile)
	if err != nil {
		return fmt.Errorf("fake k3s: reading the test control plane description: %w", err)
	}
	dataDir := dataDirOf(s)
	db := dbDirOf(s)
	tok, err := readToken(s, "token", "token-file")
	if err != nil {
		return err
	}
	if tok.secret == "" {
		if b, err := os.ReadFile(filepath.Join(dataDir, "server", "token")); err == nil {
			tok = parseToken(string(b))
		}
	}
	if tok.secret == "" {
		return fatal("--token is required: the cluster's bootstrap data is encrypted with the server token")
	}
	if tok.caHash != "" && tok.caHash != sha256Hex([]byte(cp.CAPEM)) {
		return fatal("token CA hash does not match the Cluster CA certificate hash")
	}
	agentTok, err := readToken(s, "agent-token", "agent-token-file")
	if err != nil {
		return err
	}
	n, err := describeNode(s, "server")
	if err != nil {
		return err
	}
	srv := &server{dir: filepath.Join(dataDir, "server"), nodeName: n.name, nodeIP: n.internalIP(), log: log}
	defer srv.stop()
	etcdDir := filepath.Join(db, "etcd")
	peer := srv.etcdURL(srv.nodeIP, etcdPeerPort)
	local := srv.etcdURL("127.0.0.1", etcdClientPort)
	args := []string{"--name", n.name, "--data-dir", etcdDir,
		"--listen-client-urls", local + "," + srv.etcdURL(srv.nodeIP, etcdClientPort),
		"--advertise-client-urls", srv.etcdURL(srv.nodeIP, etcdClientPort),
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster-token", "k3s", "--logger", "zap", "--log-level", "warn"}
	resetFlag := filepath.Join(db, resetFlagName)
	if restore == "" {
		if _, err := os.Stat(resetFlag); err == nil {
			//lint:ignore ST1005 k3s' own message, verbatim
			return fmt.Errorf("Managed etcd cluster membership was previously reset, please remove the cluster-reset flag and start k3s normally. If you need to perform another cluster reset, you must first manually delete the file at %s", resetFlag)
		}
		if !hasEtcd(s) {
			return fatal("no etcd datastore in %s to reset: this server runs SQLite (the fake refuses; k3s would ignore --cluster-reset)", etcdDir)
		}
		args = append(args, "--force-new-cluster")
	} else {
		st, err := os.Stat(restore)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("etcd: snapshot path does not exist: %s", restore)
		}
		if err != nil {
			return err
		}
		if st.IsDir() {
			return fmt.Errorf("etcd: snapshot path must be a file, not a directory: %s", restore)
		}
		if err := os.MkdirAll(db, 0o700); err != nil {
			return err
		}
		if _, err := os.Stat(etcdDir); err == nil {
			old := etcdDir + "-old-" + strconv.FormatInt(time.Now().Unix(), 10)
			if err := os.Rename(etcdDir, old); err != nil {
				return err
			}
			log.infof("Pre-restore etcd database moved to %s", old)
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		// etcdutl: etcd 3.6's etcdctl no longer restores (k3s restores in-process).
		out, err := exec.CommandContext(rctx, cp.Bin.Etcdutl, "snapshot", "restore", restore,
			"--name", n.name, "--data-dir", etcdDir, "--initial-cluster", n.name+"="+peer,
			"--initial-cluster-token", "k3s", "--initial-advertise-peer-urls", peer).CombinedOutput()
		cancel()
		if err != nil {
			_ = os.RemoveAll(etcdDir)
			return fmt.Errorf("etcd: restoring snapshot %s: %v: %s", restore, err, strings.TrimSpace(string(out)))
		}
		log.infof("Restored etcd snapshot %s into %s", restore, etcdDir)
	}
	// Written before etcd starts, as k3s does, so a second plain reset is refused.
	if err := writeFile(resetFlag, nil, 0o600); err != nil {
		return err
	}
	if _, err := srv.start("etcd", cp.Bin.Etcd, args...); err != nil {
		return err
	}
	err = retry(ctx, log, "reset the etcd cluster membership", func() error {
		if err := srv.exited(); err != nil {
			return fatal("%v", err)
		}
		ms, err := etcdMembers(ctx, cp.Bin.Etcdctl, local)
		if err != nil {
			return err
		}
		if len(ms) != 1 || ms[0].name != n.name {
			return fmt.Errorf("etcd has %d members, want only %s", len(ms), n.name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	gctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	cmd := exec.CommandContext(gctx, cp.Bin.Etcdctl, "--endpoints", local, "get", recordKey, "--print-value-only")
	rec, err := cmd.Output()
	cancel()
	if err != nil {
		return fmt.Errorf("reading the bootstrap data from etcd: %v", err)
	}
	switch {
	case len(strings.TrimSpace(string(rec))) == 0:
		log.warnf("No bootstrap data found in the datastore: it will be created when k3s starts")
	case !strings.Contains(string(rec), sha256Hex([]byte(tok.secret))):
		return fatal("starting kubernetes: preparing server: bootstrap data already found and encrypted with different token")
	}
	if err := writeServerFiles(s, dataDir, sha256Hex([]byte(cp.CAPEM)), tok, agentTok, cp, "https://127.0.0.1:"+apiPort); err != nil {
		return err
	}
	return nil
}
