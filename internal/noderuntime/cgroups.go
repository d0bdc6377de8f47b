package noderuntime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/homelab/rack/internal/procstat"
)

const cgroupMount = "/sys/fs/cgroup"

// ensureCgroupMounts makes the machine's cgroup hierarchies visible in this
// mount namespace. A test host's /sys is a sysfs of its own (ip netns exec
// mounts one), with an empty /sys/fs/cgroup; mounting a v1 hierarchy again
// with the same controllers gives the same hierarchy, so the kubelet and
// runc here see the machine's cgroups, as on a real host.
func ensureCgroupMounts() error {
	if _, err := os.Stat(filepath.Join(cgroupMount, "memory", "cgroup.procs")); err == nil {
		return nil // already there (the root namespace, or mounted by an earlier start)
	}
	// PID 1 lives in the machine's mount namespace; /proc is shared.
	want, err := readMountinfo("/proc/1/mountinfo")
	if err != nil {
		return fmt.Errorf("reading the machine's cgroup mounts: %w", err)
	}
	if !isMountpoint(cgroupMount) {
		if err := syscall.Mount("cgroup_root", cgroupMount, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "mode=755"); err != nil {
			return fmt.Errorf("mounting a tmpfs on %s: %w", cgroupMount, err)
		}
	}
	for _, m := range want {
		if !strings.HasPrefix(m.point, cgroupMount+"/") || (m.fstype != "cgroup" && m.fstype != "cgroup2") {
			continue
		}
		if isMountpoint(m.point) {
			continue
		}
		if err := os.MkdirAll(m.point, 0o755); err != nil {
			return err
		}
		var data []string
		for _, o := range strings.Split(m.superOpts, ",") {
			if o != "rw" && o != "ro" {
				data = append(data, o)
			}
		}
		flags := uintptr(syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC)
		if err := syscall.Mount(m.fstype, m.point, m.fstype, flags, strings.Join(data, ",")); err != nil {
			return fmt.Errorf("mounting %s (%s %s): %w", m.point, m.fstype, m.superOpts, err)
		}
	}
	return nil
}

// cgroupV1Dirs lists the mounted cgroup v1 hierarchies (cpu, memory,
// systemd, …), not the unified v2 one.
func cgroupV1Dirs() ([]string, error) {
	ms, err := readMountinfo("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.fstype == "cgroup" && strings.HasPrefix(m.point, cgroupMount+"/") {
			out = append(out, m.point)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup v1 hierarchy is mounted under " + cgroupMount)
	}
	sort.Strings(out)
	return out, nil
}

// createCgroupRoot creates root (e.g. /rack-testrack-3) under every v1
// hierarchy: the kubelet refuses a cgroupRoot missing from any of them.
func createCgroupRoot(root string) error {
	dirs, err := cgroupV1Dirs()
	if err != nil {
		return err
	}
	for _, d := range dirs {
		p := filepath.Join(d, root)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		// A new v1 cpuset starts empty, and no task can join an empty
		// cpuset: inherit the parent's.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if cur, err := os.ReadFile(filepath.Join(p, f)); err == nil && strings.TrimSpace(string(cur)) == "" {
				parent, _ := os.ReadFile(filepath.Join(d, f))
				if err := os.WriteFile(filepath.Join(p, f), parent, 0o644); err != nil {
					return fmt.Errorf("%s: %w", filepath.Join(p, f), err)
				}
			}
		}
	}
	return nil
}

// killCgroup SIGKILLs every process in root's subtree (containers, their
// children) and waits until none is left. The freezer stops them first, so
// nothing forks out of the kill.
func killCgroup(root string) error {
	dirs, err := cgroupV1Dirs()
	if err != nil {
		return err
	}
	freezer := ""
	for _, d := range dirs {
		if filepath.Base(d) == "freezer" {
			freezer = filepath.Join(d, root)
		}
	}
	if freezer != "" {
		if _, err := os.Stat(freezer); err == nil {
			_ = os.WriteFile(filepath.Join(freezer, "freezer.state"), []byte("FROZEN"), 0o644)
			defer os.WriteFile(filepath.Join(freezer, "freezer.state"), []byte("THAWED"), 0o644)
		}
	}
	// A frozen process only dies once thawed: thaw after the first round.
	thaw := func() {}
	if freezer != "" {
		thaw = func() { _ = os.WriteFile(filepath.Join(freezer, "freezer.state"), []byte("THAWED"), 0o644) }
	}
	find := func() []int { return cgroupPids(dirs, root) }
	return procstat.KillUntilGone(find, 15*time.Second, "processes in cgroup "+root+":", thaw)
}

// cgroupPids lists the processes anywhere below root, in any hierarchy.
func cgroupPids(dirs []string, root string) []int {
	seen := map[int]bool{}
	var out []int
	for _, d := range dirs {
		_ = filepath.WalkDir(filepath.Join(d, root), func(p string, e fs.DirEntry, err error) error {
			if err != nil || !e.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
					seen[pid] = true
					out = append(out, pid)
				}
			}
			return nil
		})
	}
	return out
}

// removeCgroupRoot kills what runs in root and removes its folders,
// deepest first, from every hierarchy.
func removeCgroupRoot(root string) error {
	if err := killCgroup(root); err != nil {
		return err
	}
	dirs, err := cgroupV1Dirs()
	if err != nil {
		return err
	}
	// The unified hierarchy may hold folders too (runc mirrors some there).
	if _, err := os.Stat(filepath.Join(cgroupMount, "unified", root)); err == nil {
		dirs = append(dirs, filepath.Join(cgroupMount, "unified"))
	}
	var errs []error
	for _, d := range dirs {
		var sub []string
		_ = filepath.WalkDir(filepath.Join(d, root), func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				sub = append(sub, p)
			}
			return nil
		})
		sort.Slice(sub, func(i, j int) bool { return len(sub[i]) > len(sub[j]) })
		for _, p := range sub {
			// rmdir may see EBUSY for a moment after the last task died.
			var err error
			for i := 0; i < 50; i++ {
				if err = syscall.Rmdir(p); err == nil || errors.Is(err, syscall.ENOENT) {
					err = nil
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", p, err))
			}
		}
	}
	return errors.Join(errs...)
}
