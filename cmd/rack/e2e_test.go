package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homelab/rack/internal/testlab"
)

// TestCLIUpPlanStatus drives the rack binary's commands, in process, against
// a test rack: plan, up --nodes-only --yes, a converged re-run, status.
func TestCLIUpPlanStatus(t *testing.T) {
	t.Parallel() // its own lab; rack runs as a process of its own
	lab := testlab.New(t, testlab.Spec{Cluster: "cli", Nodes: []testlab.Node{
		{Name: "srv", Role: "server", Pi: true}, {Name: "wrk", Role: "agent", Longhorn: true, LocalPV: "/storage"},
	}})
	env := lab.Env()
	inv := []string{"-i", lab.Inventory}

	// Without --nodes-only, rack up first checks that Pulumi can run; here the
	// kubernetes plugin (or the CLI) is missing, so it must stop in seconds
	// and before any node is touched. (The binary is built before the clock
	// starts: the first test to need it builds it for all.)
	rackBinary(t)
	start := time.Now()
	_, upErr, code := rack(t, env, append(inv, "up", "--yes")...)
	if code != exitFailed || !strings.Contains(upErr, "is missing:") {
		t.Fatalf("rack up without Pulumi: exit %d\n%s", code, upErr)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the missing-Pulumi check took %s", d)
	}
	if ok, _ := lab.Host("srv").FileExists("/usr/local/bin/k3s"); ok {
		t.Fatal("rack up touched a node before finding Pulumi missing")
	}

	out, errOut, code := rack(t, env, append(inv, "plan", "-o", "json")...)
	if code != exitOK {
		t.Fatalf("plan: exit %d\n%s\n%s", code, out, errOut)
	}
	var plan struct {
		Cluster string
		Nodes   []struct {
			Node, Role, Arch, Action string
			Reasons                  []string
			Steps                    []struct{ Name, Why string }
		}
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil || plan.Cluster != "cli" || len(plan.Nodes) != 2 {
		t.Fatalf("plan JSON: %v\n%s", err, out)
	}
	for _, n := range plan.Nodes {
		if n.Action != "install" || len(n.Reasons) == 0 {
			t.Errorf("plan for %s: %+v", n.Node, n)
		}
	}
	var steps []string
	for _, s := range plan.Nodes[0].Steps {
		steps = append(steps, s.Name)
		if s.Why == "" {
			t.Errorf("step %q of %s has no reason", s.Name, plan.Nodes[0].Node)
		}
	}
	if plan.Nodes[0].Arch != "arm64" || !strings.Contains(strings.Join(steps, ","), "reboot") {
		t.Errorf("the Pi server's plan: %+v", plan.Nodes[0])
	}
	// plan changed nothing: not on the nodes, and not here (no token
	// written, no binary fetched into the cache).
	if ok, _ := lab.Host("srv").FileExists("/usr/local/bin/k3s"); ok {
		t.Fatal("rack plan installed k3s")
	}
	for _, p := range []string{filepath.Join(lab.Dir, ".rack"), filepath.Join(lab.Dir, "cache")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("rack plan wrote %s", p)
		}
	}
	if !strings.Contains(out, "generate the cluster token") {
		t.Errorf("the plan does not say it will generate the token:\n%s", out)
	}

	out1, err1, code := rack(t, env, append(inv, "up", "--nodes-only", "--yes")...)
	if code != exitOK {
		t.Fatalf("up: exit %d\n%s\n%s", code, out1, err1)
	}
	out2, err2, code := rack(t, env, append(inv, "up", "--nodes-only", "--yes")...)
	if code != exitOK || !strings.Contains(out2, "no changes: every node is up to date") || !strings.Contains(out2, "no changes: the nodes are up to date") {
		t.Fatalf("converged up: exit %d\n%s\n%s", code, out2, err2)
	}
	token, err := os.ReadFile(filepath.Join(lab.Dir, ".rack", "cli", "token"))
	if err != nil || len(strings.TrimSpace(string(token))) != 64 {
		t.Fatalf("generated token: %v", err)
	}
	if all := out + errOut + out1 + err1 + out2 + err2; strings.Contains(all, strings.TrimSpace(string(token))) {
		t.Fatal("rack's output contains the token")
	}

	out, errOut, code = rack(t, env, append(inv, "status", "-o", "json")...)
	if code != exitOK {
		t.Fatalf("status: exit %d\n%s\n%s", code, out, errOut)
	}
	var st struct {
		Cluster string
		Nodes   []map[string]any
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Cluster != "cli" || len(st.Nodes) != 2 {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	for _, n := range st.Nodes {
		for _, k := range []string{"name", "role", "arch", "version", "ready", "cordoned"} {
			if _, ok := n[k]; !ok {
				t.Errorf("status node lacks %q: %v", k, n)
			}
		}
		if n["ready"] != true || n["version"] != lab.Spec.Version {
			t.Errorf("status node %v", n)
		}
	}
	out, _, code = rack(t, env, append(inv, "status")...)
	if code != exitOK || !strings.Contains(out, "srv") || !strings.Contains(out, "arm64") {
		t.Fatalf("status text: exit %d\n%s", code, out)
	}

	// Without a terminal and without --yes, rack up refuses to act.
	lab.Spec.Nodes[1].Labels = map[string]string{"x": "y"}
	if err := lab.WriteInventory(""); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = rack(t, env, append(inv, "up", "--nodes-only")...)
	if code != exitUsage || !strings.Contains(errOut, "pass --yes") {
		t.Fatalf("up without --yes and without a terminal: exit %d %s", code, errOut)
	}
}
