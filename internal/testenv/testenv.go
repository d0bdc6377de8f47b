// Package testenv holds what rack's tests share: the rule every root-only
// test follows (skip with a one-line reason on a developer's machine, fail on
// CI, RACK_TEST_REQUIRE_ROOT=1, which must run every test), waiting for a
// condition, and crash helpers (a test process killed outright).
package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// EnvRequireRoot is set to 1 by `make test` when it runs as root (CI).
const EnvRequireRoot = "RACK_TEST_REQUIRE_ROOT"

// SkipOrFail skips the test with a reason, or fails it when the environment
// says this machine must run everything.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(EnvRequireRoot) == "1" {
		t.Fatalf(format+" (and "+EnvRequireRoot+"=1 forbids skipping)", args...)
	}
	t.Skipf(format, args...)
}

// RequireRoot skips (or fails, see SkipOrFail) unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if uid := os.Geteuid(); uid != 0 {
		SkipOrFail(t, "needs root (running as uid %d)", uid)
	}
}

// Buffer collects what concurrent writers (loggers, progress displays,
// several nodes' output) write; safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// WaitFor polls cond until it holds and fails the test when ctx ends first,
// with what it waited for and the detail cond gave last (what it saw).
func WaitFor(t testing.TB, ctx context.Context, what string, cond func() (ok bool, detail string)) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, detail := cond()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s; last: %s", what, detail)
		case <-tick.C:
		}
	}
}

// Within is a context that ends after d or with the test.
func Within(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Crash tests prove that what a test process starts dies with it, or is
// cleaned up by the next run, when that process is killed outright: the
// test binary runs itself again as a helper that starts the thing, reports
// it and waits for SIGKILL.

// CrashHelper belongs at the top of TestMain: when env is 1 this process is
// the helper, so it runs start, writes the report start returns as one JSON
// line to stdout and blocks until it is killed (it exits 1 when start
// fails). Otherwise it returns at once.
func CrashHelper(env string, start func() (report any, err error)) {
	if os.Getenv(env) != "1" {
		return
	}
	rep, err := start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(rep)
	select {} // until SIGKILL
}

// StartCrashHelper runs this test binary again as CrashHelper's helper and
// decodes its report into report. The caller kills it (KillCrashHelper).
func StartCrashHelper(t testing.TB, ctx context.Context, env string, report any) *exec.Cmd {
	t.Helper()
	helper := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), env+"=1")
	helper.Stderr = os.Stderr
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(out).Decode(report); err != nil {
		KillCrashHelper(helper)
		t.Fatalf("crash helper: %v", err)
	}
	return helper
}

// KillCrashHelper SIGKILLs the helper and reaps it.
func KillCrashHelper(helper *exec.Cmd) {
	_ = helper.Process.Kill()
	_ = helper.Wait()
}
