// Package chart is what the addon components share: the pinned chart type
// (addons/charts, where its sources are resolved and checked) and the
// namespace an addon's release lives in.
package chart

import "github.com/homelab/rack/addons/charts"

// Pinned is a chart in an upstream Helm repository at an exact version;
// Ref says where a Release finds it (see charts.Pinned.Ref).
type Pinned = charts.Pinned
