//go:build tools

// Package tools pins kine for scripts/build-controlplane.sh.
package tools

import _ "github.com/k3s-io/kine"
