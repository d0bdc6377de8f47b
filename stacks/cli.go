package stacks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/blang/semver"
	"github.com/pulumi/pulumi/sdk/v3/go/auto"

	"github.com/homelab/rack/internal/atomicfile"
	"github.com/homelab/rack/inventory"
)

// minPulumi is the oldest CLI rack accepts: the newest CLI feature the
// Automation API in go.mod gates on is from v3.181.
var minPulumi = semver.Version{Major: 3, Minor: 181}

// cliRunner is the auto.PulumiCommand rack's workspaces run. It differs
// from auto.NewPulumiCommand's in two CLI starts it spares on every run
// (each ~0.3 s; a converged `rack up` is a few seconds in all):
//   - the CLI's version is asked once per binary and cached, keyed by the
//     binary's path, size and modification time;
//   - `stack select` of a stack whose state file rack has found in its file
//     backend does nothing: the Automation API selects a stack only to learn
//     that it exists, and names the stack in every later command anyway.
type cliRunner struct {
	path    string
	version semver.Version
	// existing stacks: selecting one of them needs no process.
	existing map[string]bool
}

var _ auto.PulumiCommand = (*cliRunner)(nil)

// newCLIRunner runs the pulumi binary at path (as found on PATH) and learns
// its version (from the cache when the binary is the one last asked).
func newCLIRunner(path string) (*cliRunner, error) {
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	v, err := cliVersion(path)
	if err != nil {
		return nil, err
	}
	if v.LT(minPulumi) || v.Major != minPulumi.Major {
		return nil, fmt.Errorf("%s is pulumi v%s; rack needs v%s or a newer v%d", path, v, minPulumi, minPulumi.Major)
	}
	return &cliRunner{path: path, version: v}, nil
}

func (c *cliRunner) Version() semver.Version { return c.version }

func (c *cliRunner) Run(ctx context.Context, workdir string, stdin io.Reader,
	outs, errs []io.Writer, env []string, args ...string,
) (string, string, int, error) {
	if len(args) == 4 && args[0] == "stack" && args[1] == "select" && args[2] == "--stack" && c.existing[args[3]] {
		return "", "", 0, nil
	}
	cmd := exec.CommandContext(ctx, c.path, nonInteractive(args)...)
	cmd.Dir = workdir
	cmd.Env = append(append(os.Environ(), env...), "PULUMI_AUTOMATION_API=true")
	var stdout, stderr bytes.Buffer
	cmd.Stdout = io.MultiWriter(append(outs, &stdout)...)
	cmd.Stderr = io.MultiWriter(append(errs, &stderr)...)
	cmd.Stdin = stdin
	// A Ctrl-C reaches rack, whose context then interrupts the CLI: SIGINT
	// lets it cancel the update and write its state, where a kill would
	// leave the stack locked and its operations pending.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			return cmd.Process.Kill()
		}
		return nil
	}
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	code := -2 // as the Automation API's: the CLI did not say
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err == nil {
		code = 0
	}
	return stdout.String(), stderr.String(), code, err
}

// nonInteractive puts --non-interactive before any "--": a CLI that asked
// a question would wait forever on a closed stdin.
func nonInteractive(args []string) []string {
	flags := args
	for i, a := range args {
		if a == "--" {
			flags = args[:i]
			break
		}
	}
	for _, a := range flags {
		if a == "--non-interactive" {
			return args
		}
	}
	return append([]string{"--non-interactive"}, args...)
}

// cliVersionFile caches `pulumi version` per binary, under the user's cache
// folder (~/.cache/rack/pulumi-version.json).
func cliVersionFile() (string, error) {
	return inventory.UserCache("pulumi-version.json", "the pulumi version")
}

type cliStamp struct {
	Size    int64  `json:"size"`
	ModTime int64  `json:"modTimeNs"`
	Version string `json:"version"`
}

// cliVersion is the version the binary at path reports. A cache that cannot
// be read or written only costs the CLI start it would have spared.
func cliVersion(path string) (semver.Version, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return semver.Version{}, err
	}
	stamp := cliStamp{Size: fi.Size(), ModTime: fi.ModTime().UnixNano()}
	file, ferr := cliVersionFile()
	cached := map[string]cliStamp{}
	if ferr == nil {
		if data, err := os.ReadFile(file); err == nil {
			_ = json.Unmarshal(data, &cached) // a broken cache is asked again
		}
		if c, ok := cached[path]; ok && c.Size == stamp.Size && c.ModTime == stamp.ModTime {
			if v, err := semver.ParseTolerant(c.Version); err == nil {
				return v, nil
			}
		}
	}
	cmd := exec.Command(path, "version")
	cmd.Env = append(os.Environ(), "PULUMI_SKIP_UPDATE_CHECK=true")
	out, err := cmd.Output()
	if err != nil {
		return semver.Version{}, fmt.Errorf("`%s version`: %w", path, err)
	}
	v, err := semver.ParseTolerant(strings.TrimSpace(string(out)))
	if err != nil {
		return semver.Version{}, fmt.Errorf("`%s version` printed %q: %w", path, strings.TrimSpace(string(out)), err)
	}
	if ferr == nil {
		stamp.Version = v.String()
		cached[path] = stamp
		if data, err := json.MarshalIndent(cached, "", "  "); err == nil && os.MkdirAll(filepath.Dir(file), 0o700) == nil {
			_ = atomicfile.Write(file, append(data, '\n'), 0o600)
		}
	}
	return v, nil
}
