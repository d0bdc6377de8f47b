// Package shtest proves that rack's remote-command builders keep every
// value a value: it sends hostile strings (quotes, $(…), backticks, ;, &&,
// newlines, globs, random bytes) through a builder and a real /bin/sh on a
// test host, and checks that each arrives unchanged and that nothing else
// ran. Builders make nodes.Cmd values: a fixed script and the values as its
// positional parameters. (shtest mirrors that shape, so that nodes' own
// tests can use it without an import cycle.)
package shtest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// Marker is the folder hostile strings try to create files in; Check looks
// there for anything that appeared.
const Marker = "/tmp/rack-shtest-pwned"

// Hostile returns the fixed corpus plus n random strings (any bytes but NUL,
// which no command line can carry). Each tries to create a file in Marker.
func Hostile(seed uint64, n int) []string {
	touch := "touch " + Marker + "/"
	out := []string{
		"/srv/a;" + touch + "semicolon",
		"/srv/$(" + touch + "dollar)",
		"/srv/`" + touch + "backtick`",
		"/srv/a' ; " + touch + "quote ; '",
		`/srv/a" ; ` + touch + `dquote ; "`,
		"/srv/a && " + touch + "and",
		"/srv/a | " + touch + "pipe",
		"/srv/a\n" + touch + "newline",
		"/srv/$HOME/${PATH}/$((1+1))",
		"/srv/with spaces/and\ttabs",
		"/srv/*/?[a-z]",
		"--help",
		"-rf",
		"",
		"'",
		`\`,
		`'\''`,
		"/srv/ünïcödé/日本",
		"x\r\x1b[2J\x7f",
	}
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	for i := 0; i < n; i++ {
		b := make([]byte, 1+r.IntN(40))
		for j := range b {
			b[j] = byte(1 + r.IntN(255))
		}
		if r.IntN(3) == 0 {
			b = append(b, []byte("$("+touch+fmt.Sprint("r", i)+")")...)
		}
		out = append(out, string(b))
	}
	return out
}

// Cmd is a command as nodes.Cmd is: a script and its positional values.
type Cmd struct {
	Script string
	Args   []string
}

func sh(script string, args ...string) Cmd { return Cmd{Script: script, Args: args} }

// Runner runs a command on a test host (as nodes.Cmd) and returns its stdout.
type Runner func(ctx context.Context, c Cmd) ([]byte, error)

// Builder makes a command from hostile values (as many as it needs, taken
// from vals in order).
type Builder struct {
	Name  string
	Arity int
	Build func(vals []string) Cmd
}

// CheckBuilders proves, for every builder and every hostile value, that the
// script does not depend on the values and that a real /bin/sh receives each
// value unchanged as an argument. Values go out in batches, so a few hundred
// values cost a few round trips.
func CheckBuilders(t *testing.T, ctx context.Context, run Runner, builders []Builder, vals []string) {
	t.Helper()
	for _, b := range builders {
		// A fixed script: the values never become part of its text.
		a := b.Build(fill("first", b.Arity))
		c := b.Build(fill("$(second);`x`", b.Arity))
		if a.Script != c.Script {
			t.Errorf("%s: the script changes with its values:\n%s\n---\n%s", b.Name, a.Script, c.Script)
			continue
		}
		// Every value arrives as one argument, byte for byte: the builder's
		// arguments, under the dump script, on a real shell.
		var args []string
		step := max(b.Arity, 1) // a builder without values is checked once
		for i := 0; i+b.Arity <= len(vals) && (b.Arity > 0 || i == 0); i += step {
			cmd := b.Build(vals[i : i+b.Arity])
			for _, v := range vals[i : i+b.Arity] {
				if !slices.Contains(cmd.Args, v) {
					t.Errorf("%s: value %q is not among the arguments %q", b.Name, v, cmd.Args)
				}
			}
			args = append(args, cmd.Args...)
		}
		for len(args) > 0 {
			batch := args[:min(len(args), 200)]
			args = args[len(batch):]
			out, err := run(ctx, sh(`for a in "$@"; do printf '%s\0' "$a"; done`, batch...))
			if err != nil {
				t.Fatalf("%s: %v", b.Name, err)
			}
			got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
			if len(got) != len(batch) {
				t.Fatalf("%s: %d arguments arrived, %d sent", b.Name, len(got), len(batch))
			}
			for i := range batch {
				if got[i] != batch[i] {
					t.Errorf("%s: sent %q, the shell received %q", b.Name, batch[i], got[i])
				}
			}
		}
	}
}

// CheckNothingRan fails when any hostile string managed to run a command:
// a file appeared in Marker on the host.
func CheckNothingRan(t *testing.T, ctx context.Context, run Runner) {
	t.Helper()
	out, err := run(ctx, sh(`ls -A -- "$1" 2>/dev/null || true`, Marker))
	if err != nil {
		t.Fatal(err)
	}
	if s := string(bytes.TrimSpace(out)); s != "" {
		t.Fatalf("a hostile value ran a command: %s holds %q", Marker, s)
	}
}

// Prepare creates Marker (empty) so that an injected touch would succeed.
func Prepare(t *testing.T, ctx context.Context, run Runner) {
	t.Helper()
	if _, err := run(ctx, sh(`rm -rf -- "$1" && mkdir -m 0777 -- "$1"`, Marker)); err != nil {
		t.Fatal(err)
	}
}

func fill(v string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", v, i)
	}
	return out
}
