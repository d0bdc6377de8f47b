package noderuntime

import (
	"path/filepath"

	"github.com/homelab/rack/internal/child"
)

// spawn starts a component with its output appended to logPath. It dies
// with its parent, as k3s's children do when k3s is killed.
func spawn(name, logPath, bin string, args ...string) (*child.Proc, error) {
	return child.Start(name, logPath, bin, args, child.Options{Dir: filepath.Dir(logPath),
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}})
}
