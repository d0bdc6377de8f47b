//go:build tools

// Package tools pins the Pulumi kubernetes provider plugin so
// scripts/build-provider.sh can build it from the module proxy (no released
// plugin is downloadable here).
package tools

import (
	_ "github.com/pulumi/pulumi-kubernetes/provider/v4/cmd/pulumi-resource-kubernetes"
	// The version package receives the -X ldflag.
	_ "github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
	// Upstream's generate.go, which makes the files the plugin embeds, needs it.
	_ "github.com/pulumi/pulumi/pkg/v3/codegen/schema"
)
