package nodes

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homelab/rack/internal/shtest"
	"github.com/homelab/rack/internal/testrack"
)

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"":         "''",
		"plain":    "'plain'",
		"it's":     `'it'\''s'`,
		"$(x) `y`": "'$(x) `y`'",
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
	if _, err := Sh("true", "a\x00b").Line(); err == nil || !strings.Contains(err.Error(), "NUL") {
		t.Errorf("a NUL byte in an argument: %v", err)
	}
}

// FuzzCmdLine: whatever the value, a local /bin/sh receives it unchanged as
// the one argument, and the rendered line has no other effect.
func FuzzCmdLine(f *testing.F) {
	for _, s := range shtest.Hostile(1, 20) {
		f.Add(s)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, v string) {
		line, err := Sh(`printf '%s' "$1"`, v).Line()
		if strings.IndexByte(v, 0) >= 0 {
			if err == nil {
				t.Fatal("a NUL byte was accepted")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		out, err := localShell(dir, line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if out != v {
			t.Fatalf("sent %q, received %q", v, out)
		}
		if ents, _ := os.ReadDir(filepath.Join(dir, "pwned")); len(ents) > 0 {
			t.Fatalf("%q ran a command", v)
		}
	})
}

// TestCommandBuildersOnAHost sends hostile values through every command
// builder of this package into a real /bin/sh on a test host, then runs the
// builders' real commands with them: each value arrives unchanged, and no
// injected command runs.
func TestCommandBuildersOnAHost(t *testing.T) {
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	o, _, _ := testOptions(env{})
	h := mustConnect(t, ctx, targetFor(r, r.Hosts[0], testrack.SudoUser), o)
	run := func(ctx context.Context, c shtest.Cmd) ([]byte, error) {
		return h.Output(ctx, Sh(c.Script, c.Args...), RunOptions{Privileged: true, Quiet: true})
	}
	as := func(c Cmd) shtest.Cmd { return shtest.Cmd(c) }
	shtest.Prepare(t, ctx, run)
	vals := shtest.Hostile(7, 300)
	builders := []shtest.Builder{
		{Name: "chownCmd", Arity: 2, Build: func(v []string) shtest.Cmd { return as(chownCmd(v[0], v[1])) }},
		{Name: "statCmd", Arity: 1, Build: func(v []string) shtest.Cmd { return as(statCmd(v[0])) }},
		{Name: "syncDirCmd", Arity: 1, Build: func(v []string) shtest.Cmd { return as(syncDirCmd(v[0])) }},
		{Name: "sftpServerCmd", Arity: 0, Build: func([]string) shtest.Cmd { return as(sftpServerCmd()) }},
		{Name: "bootIDCmd", Arity: 0, Build: func([]string) shtest.Cmd { return as(bootIDCmd) }},
		{Name: "InstallCmd", Arity: 5, Build: func(v []string) shtest.Cmd {
			return as(InstallCmd([]Package{{Apt: v[0], Dnf: v[1], Apk: v[2], Zypper: v[3], Service: v[4]}}, 0))
		}},
	}
	shtest.CheckBuilders(t, ctx, run, builders, vals)
	for _, v := range shtest.Hostile(7, 0) {
		for _, c := range []Cmd{chownCmd(v, "/tmp/x"), chownCmd("root", "/tmp/no-such/"+v), statCmd("/tmp/no-such/" + v), syncDirCmd("/tmp/no-such/" + v)} {
			_, _ = run(ctx, as(c)) // they fail (no such file); what matters is what else ran
		}
	}
	shtest.CheckNothingRan(t, ctx, run)
}
