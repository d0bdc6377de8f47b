package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// rack runs the rack command. Without an environment, in process. With one
// (a lab's HOME, KUBECONFIG…), as a process of its own with that
// environment on top of the test's: tests on different labs then run in
// parallel, which t.Setenv would forbid.
func rack(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	if env == nil {
		var out, errb bytes.Buffer
		code = run(args, &out, &errb)
		return out.String(), errb.String(), code
	}
	var errb bytes.Buffer
	return rackProcess(t, env, &errb, args...)
}

// rackProcess runs the built rack binary with env on top of the test's
// environment; its stderr goes to stderr (also returned).
func rackProcess(t testing.TB, env map[string]string, stderr interface {
	io.Writer
	fmt.Stringer
}, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(rackBinary(t), args...)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), stderr.String(), 0
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return out.String(), stderr.String(), exit.ExitCode()
	}
	t.Fatalf("rack %s: %v", strings.Join(args, " "), err)
	return "", "", -1
}

func writeInventory(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rack.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const badInventory = `cluster:
  name: lab
  k3s: {version: v1.33.5}
nodes:
  - {name: s1, adress: 10.0.0.1, role: server}
  - {name: s1, address: 10.0.0.2, role: sever}
apps:
  - {name: web, image: web:1, port: 80, strategy: {type: canary, steps: [5, 50, 25]}}
`

func TestValidateExamples(t *testing.T) {
	for _, f := range []string{"rack.yaml", "examples/single-node.yaml", "examples/ha.yaml"} {
		out, errOut, code := rack(t, nil, "-i", filepath.Join("..", "..", "inventory", f), "inventory", "validate")
		if code != exitOK || !strings.Contains(out, ": valid: ") {
			t.Errorf("%s: exit %d\n%s%s", f, code, out, errOut)
		}
	}
}

func TestValidateReportsEveryProblemWithLines(t *testing.T) {
	p := writeInventory(t, badInventory)
	out, _, code := rack(t, nil, "-i", p, "inventory", "validate")
	if code != exitFailed {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, line := range []string{
		p + ":3: cluster.k3s.version: \"v1.33.5\" is not a k3s version",
		p + ":5: nodes[0].adress: unknown key \"adress\" (did you mean address?)",
		p + ":6: nodes[1].name: duplicate node name \"s1\" (also nodes[0])",
		p + ":6: nodes[1].role: unknown role \"sever\": use server or agent (did you mean server?)",
		p + ":8: apps[0].strategy.steps[2]: 25 does not increase",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("output lacks %q:\n%s", line, out)
		}
	}
}

func TestValidateJSON(t *testing.T) {
	p := writeInventory(t, badInventory)
	out, _, code := rack(t, nil, "-i", p, "-o", "json", "inventory", "validate")
	if code != exitFailed {
		t.Fatalf("exit %d", code)
	}
	var res struct {
		Valid    *bool `json:"valid"`
		Problems []map[string]any
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if res.Valid == nil || *res.Valid || len(res.Problems) < 5 {
		t.Fatalf("want valid=false and every problem, got %s", out)
	}
	for _, prob := range res.Problems {
		for _, key := range []string{"file", "line", "path", "severity", "message"} {
			if _, ok := prob[key]; !ok {
				t.Errorf("problem lacks %q: %v", key, prob)
			}
		}
	}
}

func TestWarningsDoNotFail(t *testing.T) {
	p := writeInventory(t, `cluster: {name: lab, k3s: {version: v1.33}}
nodes:
  - {name: s1, address: 10.0.0.1, role: server}
  - {name: s2, address: 10.0.0.2, role: server}
`)
	out, _, code := rack(t, nil, "-i", p, "inventory", "validate")
	if code != exitOK || !strings.Contains(out, "warning: 2 servers with embedded etcd") {
		t.Fatalf("exit %d, want 0 with the warning printed:\n%s", code, out)
	}
}

func TestFlagsFromEnvironment(t *testing.T) {
	p := writeInventory(t, badInventory)
	out, _, code := rack(t, map[string]string{"RACK_INVENTORY": p, "RACK_OUTPUT": "json"}, "inventory", "validate")
	if code != exitFailed || !strings.HasPrefix(strings.TrimSpace(out), "{") {
		t.Fatalf("RACK_INVENTORY/RACK_OUTPUT ignored: exit %d\n%s", code, out)
	}
	// A flag on the command line wins over the environment.
	out, _, code = rack(t, map[string]string{"RACK_INVENTORY": p}, "-i", "../../inventory/rack.yaml", "inventory", "validate")
	if code != exitOK {
		t.Fatalf("-i did not win over RACK_INVENTORY: exit %d\n%s", code, out)
	}
	_, errOut, code := rack(t, map[string]string{"RACK_VERBOSE": "maybe"}, "version")
	if code != exitUsage || !strings.Contains(errOut, "RACK_VERBOSE") {
		t.Fatalf("bad RACK_VERBOSE: exit %d, %s", code, errOut)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{
		{"bogus"},
		{"version", "extra"},
		{"--no-such-flag", "version"},
		{"-o", "xml", "version"},
		{"inventory", "validate", "file.yaml"},
	} {
		_, errOut, code := rack(t, nil, args...)
		if code != exitUsage || !strings.Contains(errOut, "rack:") {
			t.Errorf("rack %v: exit %d, want 2 (stderr %q)", args, code, errOut)
		}
	}
}

func TestMissingInventory(t *testing.T) {
	out, _, code := rack(t, nil, "-i", filepath.Join(t.TempDir(), "none.yaml"), "inventory", "validate")
	if code != exitFailed || !strings.Contains(out, "does not exist: pass -i FILE or set RACK_INVENTORY") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

func TestVersionAndCompletion(t *testing.T) {
	out, _, code := rack(t, nil, "version")
	if code != exitOK || !strings.HasPrefix(out, "rack ") {
		t.Fatalf("version: exit %d %q", code, out)
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, _, code := rack(t, nil, "completion", shell)
		if code != exitOK || !strings.Contains(out, "rack") || len(out) < 500 {
			t.Errorf("completion %s: exit %d, %d bytes", shell, code, len(out))
		}
	}
}
