package main

import (
	"fmt"
	"io"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes/k3s/catalog"
	"github.com/homelab/rack/nodes/kube"
)

// statusReport is what rack status prints: the nodes as kube.Status has
// them (its JSON fields unchanged) and the cluster's place in the support
// window ("support").
type statusReport struct {
	*kube.Status
	Support *catalog.Support `json:"support,omitempty"`
}

// withSupport adds (as rack status reads the nodes: withSupport(inv)(kube.ReadStatus(…))) the support window of the version the cluster runs to a
// status read from the API: its oldest kubelet (the version nearest its end
// of life; with rack's upgrade order, the servers'), or the inventory's when
// no node is registered. The catalog is rack's own (embedded, or refreshed by
// rack versions --refresh), the date today.
func withSupport(inv *inventory.Inventory) func(*kube.Status, error) (*statusReport, error) {
	return func(st *kube.Status, err error) (*statusReport, error) {
		if err != nil {
			return nil, err
		}
		return supportReport(inv, st), nil
	}
}

func supportReport(inv *inventory.Inventory, st *kube.Status) *statusReport {
	r := &statusReport{Status: st}
	version := clusterVersion(st, inv.Cluster.K3s.Version)
	c, _, cerr := catalog.Open("")
	if cerr != nil || version == "" {
		return r
	}
	if s, err := c.SupportOf(version, catalog.Today()); err == nil {
		r.Support = &s
	}
	return r
}

// clusterVersion is the oldest k3s release a registered node runs, else fallback.
func clusterVersion(st *kube.Status, fallback string) string {
	var oldest inventory.K3sVersion
	for _, n := range st.Nodes {
		v, err := inventory.ParseK3sVersion(n.Version)
		if err != nil || !n.Registered {
			continue
		}
		if oldest.IsZero() || v.Less(oldest) {
			oldest = v
		}
	}
	if oldest.IsZero() {
		return fallback
	}
	return oldest.String()
}

// WriteText is the nodes' table, then the support window, with a warning
// line when the minor is out of support or within catalog.WarnDays of it.
func (r *statusReport) WriteText(w io.Writer) error {
	if err := r.Status.WriteText(w); err != nil {
		return err
	}
	s := r.Support
	if s == nil {
		return nil
	}
	if s.Supported {
		fmt.Fprintf(w, "support: k3s %s is supported until %s (%d days left)\n", s.Minor, s.EOL, s.DaysLeft)
	}
	if s.Warning != "" {
		fmt.Fprintf(w, "warning: %s\n", s.Warning)
	}
	return nil
}
