package stacks

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNonInteractive(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{[]string{"up", "--stack", "lab"}, []string{"--non-interactive", "up", "--stack", "lab"}},
		{[]string{"--non-interactive", "up"}, []string{"--non-interactive", "up"}},
		{[]string{"up", "--non-interactive"}, []string{"up", "--non-interactive"}},
		// After "--" an argument is the program's, not the CLI's flag.
		{[]string{"run", "--", "--non-interactive"}, []string{"--non-interactive", "run", "--", "--non-interactive"}},
		{nil, []string{"--non-interactive"}},
	} {
		if got := nonInteractive(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("nonInteractive(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Selecting a stack rack found a state file for starts no process; any
// other command does (here: a binary that does not exist fails it).
func TestCLIRunnerSelectsExistingStacksWithoutTheCLI(t *testing.T) {
	c := &cliRunner{path: filepath.Join(t.TempDir(), "no-pulumi"), existing: map[string]bool{"lab": true}}
	ctx := context.Background()
	if _, _, code, err := c.Run(ctx, t.TempDir(), nil, nil, nil, nil, "stack", "select", "--stack", "lab"); err != nil || code != 0 {
		t.Fatalf("select of an existing stack: code %d, %v; want 0 and no process", code, err)
	}
	for _, args := range [][]string{
		{"stack", "select", "--stack", "other"},
		{"stack", "select", "--stack", "lab", "--create"},
		{"up", "--stack", "lab"},
	} {
		if _, _, code, err := c.Run(ctx, t.TempDir(), nil, nil, nil, nil, args...); err == nil || code == 0 {
			t.Errorf("Run(%q) = code %d, nil error: it must have run the (missing) CLI", args, code)
		}
	}
}

// The CLI's version is asked once per binary: the cache answers while the
// binary is unchanged, and a changed binary is asked again.
func TestCLIVersionCache(t *testing.T) {
	pulumiCLI(t)
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	real, err := exec.LookPath("pulumi")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "pulumi")
	data, err := os.ReadFile(real)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
	c, err := newCLIRunner(bin)
	if err != nil {
		t.Fatal(err)
	}
	if c.Version().String() != want || c.path != bin {
		t.Fatalf("newCLIRunner: %s v%s, want %s v%s", c.path, c.Version(), bin, want)
	}

	// Rewrite the cached answer: a runner that reports it asked no CLI.
	file, err := cliVersionFile()
	if err != nil {
		t.Fatal(err)
	}
	cached := map[string]cliStamp{}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("no version cache written: %v", err)
	}
	if err := json.Unmarshal(raw, &cached); err != nil {
		t.Fatal(err)
	}
	st, ok := cached[bin]
	if !ok || st.Version != want {
		t.Fatalf("cache %s holds %+v, want %s at v%s", file, cached, bin, want)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("cache file mode: %v, %v; want 0600", fi.Mode(), err)
	}
	st.Version = "3.999.0"
	cached[bin] = st
	raw, _ = json.Marshal(cached)
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := newCLIRunner(bin); err != nil || c.Version().String() != "3.999.0" {
		t.Fatalf("with the cache holding v3.999.0 for an unchanged binary: %v, %v; want the cached answer", c, err)
	}

	// A binary replaced (here: only its time) is asked again.
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(bin, later, later); err != nil {
		t.Fatal(err)
	}
	if c, err := newCLIRunner(bin); err != nil || c.Version().String() != want {
		t.Fatalf("after the binary changed: %v, %v; want v%s asked again", c, err, want)
	}

	// A broken cache costs a CLI start, not the run.
	if err := os.WriteFile(file, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := newCLIRunner(bin); err != nil || c.Version().String() != want {
		t.Fatalf("with a broken cache: %v, %v; want v%s", c, err, want)
	}
}
