package kube

import (
	"context"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/inventory"
)

// NodeStatus is one node as `rack status` shows it.
type NodeStatus struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	Arch     string `json:"arch"`
	Version  string `json:"version"`
	Ready    bool   `json:"ready"`
	Cordoned bool   `json:"cordoned"`
	// Registered is false for an inventory node the cluster does not know.
	Registered bool `json:"registered"`
	// InInventory is false for a Node the inventory does not list.
	InInventory bool `json:"inInventory"`
}

// Status is the cluster as its API server sees it, against the inventory.
type Status struct {
	Cluster string       `json:"cluster"`
	Nodes   []NodeStatus `json:"nodes"`
}

// ReadStatus asks the API server for every Node and lines them up with the
// inventory.
func ReadStatus(ctx context.Context, cs kubernetes.Interface, inv *inventory.Inventory) (*Status, error) {
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: the API server did not answer: %w (is the first server up? try rack up --nodes-only)", inv.Cluster.Name, err)
	}
	byName := map[string]corev1.Node{}
	for _, n := range list.Items {
		byName[n.Name] = n
	}
	st := &Status{Cluster: inv.Cluster.Name, Nodes: []NodeStatus{}}
	for _, n := range inv.Nodes {
		ns := NodeStatus{Name: n.Name, Role: n.Role, Arch: n.Arch, InInventory: true}
		if k, ok := byName[n.Name]; ok {
			fill(&ns, k)
			delete(byName, n.Name)
		}
		st.Nodes = append(st.Nodes, ns)
	}
	var strays []string
	for name := range byName {
		strays = append(strays, name)
	}
	sort.Strings(strays)
	for _, name := range strays {
		k := byName[name]
		ns := NodeStatus{Name: name, Role: inventory.RoleAgent}
		if _, ok := k.Labels["node-role.kubernetes.io/control-plane"]; ok {
			ns.Role = inventory.RoleServer
		}
		fill(&ns, k)
		st.Nodes = append(st.Nodes, ns)
	}
	return st, nil
}

func fill(ns *NodeStatus, k corev1.Node) {
	ns.Registered = true
	ns.Version = k.Status.NodeInfo.KubeletVersion
	if a := k.Labels[corev1.LabelArchStable]; a != "" {
		ns.Arch = a
	}
	ns.Ready = NodeReady(&k)
	ns.Cordoned = k.Spec.Unschedulable
}

// WriteText prints the status as a table.
func (s *Status) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "cluster %s\n", s.Cluster)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tARCH\tVERSION\tREADY\tSCHEDULING")
	for _, n := range s.Nodes {
		ready, sched := "yes", "enabled"
		switch {
		case !n.Registered:
			ready = "not in cluster"
		case !n.Ready:
			ready = "NO"
		}
		if n.Cordoned {
			sched = "cordoned"
		}
		name := n.Name
		if !n.InInventory {
			name += " (not in inventory)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", name, n.Role, dash(n.Arch), dash(n.Version), ready, sched)
	}
	return tw.Flush()
}

// Healthy reports whether every inventory node is registered and Ready.
func (s *Status) Healthy() bool {
	for _, n := range s.Nodes {
		if n.InInventory && (!n.Registered || !n.Ready) {
			return false
		}
	}
	return true
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
