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
		if Alive(c.Process.Pid, 0) {
			t.Errorf("pid %d still runs", c.Process.Pid)
		}
	}

	// What never goes away is reported with its name, after the timeout.
	err := KillUntilGone(func() []int { return []int{1 << 30} }, 100*time.Millisecond, "ghosts", nil)
	if err == nil || !strings.Contains(err.Error(), "ghosts [1073741824] survive SIGKILL") {
		t.Fatalf("want a timeout naming the ghosts, got %v", err)
	}
}

func TestAliveAndWaitGone(t *testing.T) {
	c := exec.Command("sleep", "100")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pid := c.Process.Pid
	st, err := Read(pid)
	if err != nil {
		t.Fatal(err)
	}
	if !Alive(pid, 0) || !Alive(pid, st.Start) {
		t.Fatalf("a running sleep (pid %d) is not alive", pid)
	}
	if Alive(pid, st.Start+1) {
		t.Errorf("pid %d with another start time counts as the same process", pid)
	}
	if WaitGone(pid, st.Start, 50*time.Millisecond) {
		t.Errorf("WaitGone: a running sleep reported gone")
	}
	_ = c.Process.Kill()
	// Not reaped yet: a zombie, which counts as gone.
	if !WaitGone(pid, st.Start, 5*time.Second) {
		t.Errorf("WaitGone: the killed sleep (a zombie until reaped) still counts as alive")
	}
	_ = c.Wait()
	if Alive(pid, 0) {
		t.Errorf("the reaped sleep is alive")
	}
}
