package procstat

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPidsAndKillUntilGone(t *testing.T) {
	marker := "procstat-test-" + strings.ReplaceAll(t.Name(), "/", "-")
	var cmds []*exec.Cmd
	for range 3 {
		// sh -c with the marker as $0: it shows in the command line.
		c := exec.Command("sh", "-c", "sleep 100", marker)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
		go c.Wait() // reaped as it dies, so it does not linger as a zombie
	}
	find := func() []int {
		return Pids(func(_ int, args []string) bool { return slices.Contains(args, marker) })
	}
	if got := find(); len(got) != 3 {
		t.Fatalf("Pids found %v, want the 3 shells", got)
	}
	if err := KillUntilGone(find, 5*time.Second, "test shells", nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		if alive(c.Process.Pid) {
			t.Errorf("pid %d still runs", c.Process.Pid)
		}
	}

	// What never goes away is reported with its name, after the timeout.
	err := KillUntilGone(func() []int { return []int{1 << 30} }, 100*time.Millisecond, "ghosts", nil)
	if err == nil || !strings.Contains(err.Error(), "ghosts [1073741824] survive SIGKILL") {
		t.Fatalf("want a timeout naming the ghosts, got %v", err)
	}
}

func alive(pid int) bool {
	st, err := Read(pid)
	return err == nil && !st.Zombie()
}
