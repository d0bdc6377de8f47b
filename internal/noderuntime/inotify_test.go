package noderuntime

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRaiseInotifyLimits: a limit below its floor is raised to it, one
// above is left alone.
func TestRaiseInotifyLimits(t *testing.T) {
	dir := t.TempDir()
	low, high := filepath.Join(dir, "low"), filepath.Join(dir, "high")
	for p, v := range map[string]string{low: "128\n", high: "8192\n"} {
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	saved := inotifyFloor
	t.Cleanup(func() { inotifyFloor = saved })
	inotifyFloor = map[string]int{low: 1024, high: 1024}
	if err := raiseInotifyLimits(); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{low: "1024", high: "8192\n"} {
		if b, _ := os.ReadFile(p); string(b) != want {
			t.Errorf("%s = %q, want %q", filepath.Base(p), b, want)
		}
	}
}
