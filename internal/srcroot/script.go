package srcroot

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// RunScript runs one of the tree's build scripts (rel, under root) and
// returns the last line it printed on stdout, where they print what they
// built. Its stderr lines go to logf as they come, after prefix: the
// scripts announce their slow steps, so a test that seems stuck for
// minutes says why. A failure carries the last 20 of them.
func RunScript(ctx context.Context, root, rel string, args []string, logf func(string, ...any), prefix string) (string, error) {
	script := filepath.Join(root, rel)
	cmd := exec.CommandContext(ctx, script, args...)
	cmd.Dir = root
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("%s: %w", script, err)
	}
	var last []string
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		logf("%s: %s", prefix, sc.Text())
		last = append(last, sc.Text())
		if len(last) > 20 {
			last = last[1:]
		}
	}
	if err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("%s: %v: %s", script, err, strings.Join(last, "\n"))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	out := strings.TrimSpace(lines[len(lines)-1])
	if out == "" {
		return "", fmt.Errorf("%s printed nothing on its last line", script)
	}
	return out, nil
}
