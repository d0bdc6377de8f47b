package addontest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/homelab/rack/internal/testcluster"
	"github.com/homelab/rack/internal/testenv"
)

// EnvCharts names the folder of the upstream charts at the pinned versions
// (<name>-<version>.tgz, as `helm pull` makes them); default ../shared/charts
// beside the source tree, where the test machines keep them.
const EnvCharts = "RACK_TEST_CHARTS"

// ChartsDir returns the folder of packaged upstream charts tests use as
// rack's chart mirror (chart repositories cannot be reached from the test
// machines). Without it the test skips, or fails on CI.
func ChartsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(EnvCharts)
	if dir == "" {
		root, err := testcluster.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(filepath.Dir(root), "shared", "charts")
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		testenv.SkipOrFail(t, "no packaged charts at %s (set %s to a folder of <chart>-<version>.tgz)", dir, EnvCharts)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}
