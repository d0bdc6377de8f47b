package noderuntime

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
)

// mountEntry is one line of /proc/<pid>/mountinfo.
type mountEntry struct {
	point, fstype, source, superOpts, opts string
}

func readMountinfo(path string) ([]mountEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 6 || len(b) < 3 {
			continue
		}
		out = append(out, mountEntry{point: unescape(a[4]), opts: a[5], fstype: b[0], source: b[1], superOpts: b[2]})
	}
	return out, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isMountpoint(path string) bool {
	ms, err := readMountinfo("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m.point == path {
			return true
		}
	}
	return false
}

// ensureTmpfs mounts a private tmpfs at path unless something is mounted
// there already (a restart of the node keeps its run-time state, as a
// restarted k3s finds /run/k3s as it left it).
func ensureTmpfs(path, mode string) error {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return err
	}
	if isMountpoint(path) {
		return nil
	}
	if err := syscall.Mount("rack-node", path, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode="+mode); err != nil {
		return fmt.Errorf("mounting a tmpfs on %s: %w", path, err)
	}
	return nil
}

// unmountUnder detaches every mount at or below the given paths, deepest
// first: pod volumes, container root file systems, network namespace
// files, the kubelet's bind mount of its root dir and the tmpfs below.
func unmountUnder(paths ...string) error {
	ms, err := readMountinfo("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, m := range ms {
		for _, p := range paths {
			if m.point == p || strings.HasPrefix(m.point, strings.TrimSuffix(p, "/")+"/") {
				points = append(points, m.point)
				break
			}
		}
	}
	// Mountinfo lists mounts in the order they were made; stacked mounts on
	// one point must go newest first, so reverse before the stable sort.
	for i, j := 0, len(points)-1; i < j; i, j = i+1, j-1 {
		points[i], points[j] = points[j], points[i]
	}
	sort.SliceStable(points, func(i, j int) bool { return strings.Count(points[i], "/") > strings.Count(points[j], "/") })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
