package procstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Pids lists the processes, other than this one, whose command line match
// accepts (args as /proc/<pid>/cmdline splits them).
func Pids(match func(pid int, args []string) bool) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		if match(pid, strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")) {
			out = append(out, pid)
		}
	}
	return out
}

// KillUntilGone SIGKILLs the processes find lists, again and again (a
// process may fork meanwhile), until find lists none or timeout passes;
// what names them in the error. afterKill, when set, runs after each round
// of signals (a frozen cgroup must be thawed for its processes to die).
func KillUntilGone(find func() []int, timeout time.Duration, what string, afterKill func()) error {
	deadline := time.Now().Add(timeout)
	for {
		pids := find()
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s %v survive SIGKILL", what, pids)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if afterKill != nil {
			afterKill()
		}
		time.Sleep(20 * time.Millisecond)
	}
}
