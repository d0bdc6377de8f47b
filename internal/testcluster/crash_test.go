package testcluster

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/homelab/rack/internal/testenv"
)

const crashHelperEnv = "RACK_TESTCLUSTER_CRASH_HELPER"

// TestMain doubles as the crashing process of TestCrashedRunLeavesNothing:
// with the variable set, the binary starts a control plane, reports it and
// waits to be SIGKILLed.
func TestMain(m *testing.M) {
	testenv.CrashHelper(crashHelperEnv, func() (any, error) {
		c, err := Start(context.Background(), Options{})
		if err != nil {
			return nil, err
		}
		rep := crashReport{Dir: c.Dir}
		for _, p := range c.procs {
			rep.PIDs = append(rep.PIDs, p.Cmd.Process.Pid)
		}
		return rep, nil
	})
	os.Exit(m.Run())
}

type crashReport struct {
	Dir  string `json:"dir"`
	PIDs []int  `json:"pids"`
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
	var rep crashReport
	testenv.KillCrashHelper(testenv.StartCrashHelper(t, ctx, crashHelperEnv, &rep))

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
