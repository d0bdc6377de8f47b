package testcluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"
)

const crashHelperEnv = "RACK_TESTCLUSTER_CRASH_HELPER"

// TestMain doubles as the crashing process of TestCrashedRunLeavesNothing:
// with the variable set, the binary starts a control plane, reports it and
// waits to be SIGKILLed.
func TestMain(m *testing.M) {
	if os.Getenv(crashHelperEnv) == "1" {
		crashHelper()
		return
	}
	os.Exit(m.Run())
}

type crashReport struct {
	Dir  string `json:"dir"`
	PIDs []int  `json:"pids"`
}

func crashHelper() {
	c, err := Start(context.Background(), Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rep := crashReport{Dir: c.Dir}
	for _, p := range c.procs {
		rep.PIDs = append(rep.PIDs, p.Cmd.Process.Pid)
	}
	_ = json.NewEncoder(os.Stdout).Encode(rep)
	select {} // until SIGKILL
}

// A test process killed outright takes its control plane with it (the
// components die with their parent), and the next run removes the
// directory it left.
func TestCrashedRunLeavesNothing(t *testing.T) {
	requireRoot(t)
	// Build (or find) the binaries first, so the helper only starts.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	binaries(t, ctx)
	helper := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), crashHelperEnv+"=1")
	helper.Stderr = os.Stderr
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	var rep crashReport
	line, err := bufio.NewReader(out).ReadBytes('\n')
	if err != nil || json.Unmarshal(line, &rep) != nil {
		_ = helper.Process.Kill()
		t.Fatalf("crash helper: %v: %q", err, line)
	}
	_ = helper.Process.Kill()
	_ = helper.Wait()

	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range rep.PIDs {
		for {
			if _, err := procStart(pid); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("component pid %d survives its parent", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if _, err := os.Stat(rep.Dir); err != nil {
		t.Fatalf("the crashed run's dir should still be there before the next run: %v", err)
	}
	dir, err := newClusterDir(ctx, "", t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if _, err := os.Stat(rep.Dir); !os.IsNotExist(err) {
		t.Errorf("the crashed run's dir %s survives the next run (err %v)", rep.Dir, err)
	}
}
