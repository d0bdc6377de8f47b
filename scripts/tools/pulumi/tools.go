//go:build tools

// Package tools pins the pulumi CLI so scripts/build-pulumi.sh can build it
// from the module proxy (no released binary is downloadable here).
package tools

import (
	_ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
	// The version package receives the -X ldflag; importing it keeps sdk/v3 a
	// direct, pinned requirement.
	_ "github.com/pulumi/pulumi/sdk/v3/go/common/version"
)
