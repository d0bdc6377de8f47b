// Package procstat reads /proc/<pid>/stat, which the test rack, the test
// control plane and the init shim all use to tell a live process from a
// zombie or from an unrelated process that got the same pid later. It has no
// dependencies, so the small stand-in binaries can import it.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Stat is the part of /proc/<pid>/stat the tests need.
type Stat struct {
	State byte   // R, S, D, Z, X, …
	PPID  int    // parent pid
	Start uint64 // start time in clock ticks after boot
}

// Zombie reports whether the process has exited but not been reaped.
func (s Stat) Zombie() bool { return s.State == 'Z' || s.State == 'X' }

// Read parses /proc/<pid>/stat.
func Read(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	// The command name may contain spaces and parentheses; fields are only
	// unambiguous after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	// f[0] is field 3 (state); ppid is field 4, starttime field 22.
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 20 || f[0] == "" {
		return Stat{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ppid, _ := strconv.Atoi(f[1])
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("/proc/%d/stat: start time: %v", pid, err)
	}
	return Stat{State: f[0][0], PPID: ppid, Start: start}, nil
}

// Alive reports whether pid runs and is the process that started at start
// (0: whichever process has that pid). A zombie counts as gone: it holds no
// namespaces and no files, and only its parent can reap it.
func Alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	s, err := Read(pid)
	return err == nil && !s.Zombie() && (start == 0 || s.Start == start)
}

// WaitGone polls until pid is gone (see Alive) or d has passed; it reports
// whether it is gone.
func WaitGone(pid int, start uint64, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for Alive(pid, start) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
