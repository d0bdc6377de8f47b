//go:build tools

// Package tools pins MetalLB's two commands for `go mod tidy`.
package tools

import (
	_ "go.universe.tf/metallb/controller"
	_ "go.universe.tf/metallb/speaker"
)
