package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes/k3s/catalog"
	"github.com/homelab/rack/nodes/kube"
)

func TestClusterVersionIsTheOldestKubelet(t *testing.T) {
	st := &kube.Status{Nodes: []kube.NodeStatus{
		{Name: "a", Version: "v1.34.2+k3s1", Registered: true},
		{Name: "b", Version: "v1.33.5+k3s2", Registered: true},
		{Name: "c", Version: "v1.33.5+k3s1", Registered: false},
		{Name: "d", Version: "garbage", Registered: true},
	}}
	if v := clusterVersion(st, "v1.30.0+k3s1"); v != "v1.33.5+k3s2" {
		t.Errorf("cluster version %s", v)
	}
	if v := clusterVersion(&kube.Status{}, "v1.30.0+k3s1"); v != "v1.30.0+k3s1" {
		t.Errorf("no node registered: %s", v)
	}
}

// The JSON keeps kube.Status' fields and adds "support"; the text warns
// under catalog.WarnDays.
func TestStatusReportSupport(t *testing.T) {
	st := &kube.Status{Cluster: "lab", Nodes: []kube.NodeStatus{{Name: "s", Role: "server", Version: "v1.33.5+k3s1", Ready: true, Registered: true, InInventory: true}}}
	inv := &inventory.Inventory{}
	inv.Cluster.K3s.Version = "v1.33.5+k3s1"
	r := supportReport(inv, st)
	want, _ := catalog.Embedded().SupportOf("v1.33.5+k3s1", catalog.Today())
	if r.Support == nil || r.Support.Minor != "1.33" || r.Support.EOL != want.EOL {
		t.Fatalf("support %+v", r.Support)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	for _, k := range []string{"cluster", "nodes", "support"} {
		if _, ok := m[k]; !ok {
			t.Errorf("status JSON lacks %q: %s", k, b)
		}
	}
	sup := m["support"].(map[string]any)
	for _, k := range []string{"minor", "supported", "eol", "daysLeft"} {
		if _, ok := sup[k]; !ok {
			t.Errorf("support lacks %q: %s", k, b)
		}
	}

	for _, tc := range []struct {
		s    catalog.Support
		want []string
		not  string
	}{
		{catalog.Support{Minor: "1.35", Supported: true, EOL: "2027-02-28", DaysLeft: 88}, []string{"k3s 1.35 is supported until 2027-02-28 (88 days left)"}, "warning"},
		{catalog.Support{Minor: "1.35", Supported: true, EOL: "2027-02-28", DaysLeft: 20, Warning: "k3s 1.35 reaches end of life on 2027-02-28, in 20 day(s): plan the upgrade (rack upgrade plan)"},
			[]string{"(20 days left)", "warning: k3s 1.35 reaches end of life on 2027-02-28, in 20 day(s)"}, ""},
		{catalog.Support{Minor: "1.33", EOL: "2026-06-28", Warning: "k3s 1.33 reached end of life on 2026-06-28"}, []string{"warning: k3s 1.33 reached end of life"}, "supported until"},
	} {
		r := &statusReport{Status: st, Support: &tc.s}
		var b strings.Builder
		if err := r.WriteText(&b); err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("text lacks %q:\n%s", w, b.String())
			}
		}
		if tc.not != "" && strings.Contains(b.String(), tc.not) {
			t.Errorf("text has %q:\n%s", tc.not, b.String())
		}
		if !strings.Contains(b.String(), "NODE") {
			t.Errorf("the nodes' table is missing:\n%s", b.String())
		}
	}
}
