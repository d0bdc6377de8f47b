// Package srcroot finds rack's source tree, for the tests and tools that
// build or read files from it. Standard library only: small binaries (the
// image builder) link it.
package srcroot

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// ModulePath is rack's Go module.
const ModulePath = "github.com/homelab/rack"

// Find returns the folder holding rack's go.mod: upwards from the working
// directory (tests run in their package's folder, make demo at the root),
// else from this source file's location, which a -trimpath build does not
// know.
func Find() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, d := range starts {
		for {
			if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && moduleOf(b) == ModulePath {
				return d, nil
			}
			parent := filepath.Dir(d)
			if parent == d {
				break
			}
			d = parent
		}
	}
	return "", fmt.Errorf("cannot find the %s source tree from the working directory or this binary's sources", ModulePath)
}

func moduleOf(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return f[1]
		}
	}
	return ""
}
