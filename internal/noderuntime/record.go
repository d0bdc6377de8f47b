package noderuntime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/homelab/rack/internal/flock"
)

// recordDir holds one record per node (by cgroup name) on the machine's
// /run, which test hosts share: enough for Sweep, run from anywhere, to
// tell a node whose host is gone and clean up what outlives a host's
// namespaces (container processes in their own network namespaces, the
// cgroup folders).
const recordDir = "/run/rack-noderuntime"

type record struct {
	Node       string `json:"node"`
	CgroupRoot string `json:"cgroupRoot"`
	// NetNS identifies the host's network namespace (device and inode of
	// its nsfs file): the node is stale once no process and no
	// /run/netns file holds it.
	NetNS  nsID   `json:"netns"`
	BootID string `json:"bootID"`
}

type nsID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

func statNS(path string) (nsID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

func nsOf(pid int, kind string) (nsID, error) {
	return statNS("/proc/" + strconv.Itoa(pid) + "/ns/" + kind)
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

func recordPath(cgroupRoot string) string {
	return filepath.Join(recordDir, strings.TrimPrefix(cgroupRoot, "/")+".json")
}

// writeRecord is written before the cgroups exist, so a crash in between
// leaves nothing Sweep cannot find.
func writeRecord(c *Config) error {
	ns, err := nsOf(os.Getpid(), "net")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(recordDir, 0o755); err != nil {
		return err
	}
	b, _ := json.Marshal(record{Node: c.NodeName, CgroupRoot: c.CgroupRoot, NetNS: ns, BootID: bootID()})
	tmp := recordPath(c.CgroupRoot) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, recordPath(c.CgroupRoot))
}

func removeRecord(cgroupRoot string) error {
	if err := os.Remove(recordPath(cgroupRoot)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// netnsAlive reports whether a process or a /run/netns file still holds
// the network namespace.
func netnsAlive(id nsID) bool {
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if got, err := statNS(filepath.Join("/run/netns", e.Name())); err == nil && got == id {
				return true
			}
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if got, err := nsOf(pid, "net"); err == nil && got == id {
			return true
		}
	}
	return false
}

// Sweep removes what nodes whose host is gone left behind: it kills the
// processes in their cgroup roots (containers outlive the host's network
// namespace in their own) and removes the cgroup folders and records. It
// also removes /rack-* cgroup roots that have no record. Nodes of live
// hosts are never touched. Start calls it; the test rack's own sweep
// should too (see the report).
func Sweep(ctx context.Context, logf func(string, ...any)) error {
	unlock, err := lockRecords(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	return sweepLocked(logf)
}

// lockRecords serialises Sweep with a node's start between its record and
// its cgroups: a host name (and so a cgroup root) is reused by the next
// rack, and a sweep must not take the new node's folders for the old one's.
func lockRecords(ctx context.Context) (func(), error) {
	if err := os.MkdirAll(recordDir, 0o755); err != nil {
		return nil, err
	}
	l, err := flock.Acquire(ctx, filepath.Join(recordDir, "lock"))
	if err != nil {
		return nil, err
	}
	return l.Unlock, nil
}

func sweepLocked(logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if _, err := os.Stat(filepath.Join(cgroupMount, "memory")); err != nil {
		return nil // no cgroups visible here: nothing to sweep
	}
	known := map[string]bool{}
	var errs []error
	ents, _ := os.ReadDir(recordDir)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(recordDir, e.Name()))
		var r record
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err != nil || r.CgroupRoot == "" {
			_ = os.Remove(filepath.Join(recordDir, e.Name()))
			continue
		}
		known[r.CgroupRoot] = true
		if r.BootID == bootID() && netnsAlive(r.NetNS) {
			continue
		}
		logf("noderuntime: removing node %s (%s): its host is gone", r.Node, r.CgroupRoot)
		if err := removeCgroupRoot(r.CgroupRoot); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, removeRecord(r.CgroupRoot))
	}
	dirs, _ := filepath.Glob(filepath.Join(cgroupMount, "memory", CgroupPrefix+"*"))
	for _, d := range dirs {
		root := "/" + filepath.Base(d)
		if known[root] {
			continue
		}
		// A record may be on its way (Start writes it first, then creates
		// the folders); one that appears now is not an orphan.
		if _, err := os.Stat(recordPath(root)); err == nil {
			continue
		}
		logf("noderuntime: removing orphaned cgroup root %s", root)
		if err := removeCgroupRoot(root); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", root, err))
		}
	}
	return errors.Join(errs...)
}
