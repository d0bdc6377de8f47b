// Package chart is what the addon components share: the pinned chart type
// (addons/charts, where its sources are resolved and checked) and the
// namespace an addon's release lives in.
package chart

import "github.com/homelab/rack/addons/charts"

// Pinned is a chart in an upstream Helm repository at an exact version;
// Apply points a Release at it (see charts.Pinned.Apply).
type Pinned = charts.Pinned
