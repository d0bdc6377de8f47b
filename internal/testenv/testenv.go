// Package testenv holds the rule every root-only test follows: skip with a
// one-line reason on a developer's machine, fail on CI (RACK_TEST_REQUIRE_ROOT=1),
// which must run every test.
package testenv

import (
	"bytes"
	"os"
	"sync"
	"testing"
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
