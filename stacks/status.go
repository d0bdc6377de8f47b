package stacks

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/homelab/rack/addons/argocd"
	"github.com/homelab/rack/addons/charts"
	"github.com/homelab/rack/addons/longhorn"
	"github.com/homelab/rack/addons/metallb"
	"github.com/homelab/rack/addons/traefik"
	"github.com/homelab/rack/inventory"
)

// AddonStatus is one addon as `rack status` shows it: what Helm recorded
// of its release, read from the cluster, and how many of the pods its
// workloads want are ready.
type AddonStatus struct {
	// Name is the addon's inventory key (metallb, longhorn, localPV…).
	Name string `json:"name"`
	// Chart and Version are the chart of the deployed release ("" for
	// localPV, which has none).
	Chart   string `json:"chart"`
	Version string `json:"version"`
	// Status is Helm's (deployed, failed, pending-install…), or
	// "not installed"; localPV's is deployed or incomplete.
	Status string `json:"status"`
	// Ready is "ready pods/wanted pods" over the addon's workloads.
	Ready string `json:"ready"`

	Namespace string `json:"namespace,omitempty"`
	// Pinned is the chart version rack installs.
	Pinned   string `json:"pinned,omitempty"`
	Revision int    `json:"revision,omitempty"`
	// Problem says what is wrong and what to do; empty when healthy.
	Problem string `json:"problem,omitempty"`
}

// Healthy reports whether the addon is deployed and all its pods ready.
func (a AddonStatus) Healthy() bool { return a.Problem == "" }

// addonRelease is where an addon's Helm release lives.
type addonRelease struct {
	key, release, namespace string
	chart                   charts.Pinned
}

// addonReleases are the addons with a chart the inventory turns on.
func addonReleases(inv *inventory.Inventory) []addonRelease {
	a := inv.Addons
	var out []addonRelease
	if a.MetalLB != nil {
		out = append(out, addonRelease{"metallb", "metallb", metallb.DefaultNamespace, metalLBChart})
	}
	if a.Longhorn != nil {
		out = append(out, addonRelease{"longhorn", "longhorn", longhorn.DefaultNamespace, longhornChart})
	}
	if a.Traefik != nil {
		out = append(out, addonRelease{"traefik", "traefik", traefik.DefaultNamespace, charts.Traefik})
	}
	if a.ArgoCD != nil {
		out = append(out, addonRelease{"argocd", "argocd", argocd.DefaultNamespace, argoCDChart})
	}
	return out
}

// ReadAddons reads the state of every addon the inventory turns on from
// the cluster: each release's newest Helm record, and the ready pods of
// the workloads in its namespace. localPV comes last: its StorageClass and
// volumes.
func ReadAddons(ctx context.Context, cs kubernetes.Interface, inv *inventory.Inventory) ([]AddonStatus, error) {
	out := []AddonStatus{}
	for _, a := range addonReleases(inv) {
		st := AddonStatus{Name: a.key, Chart: a.chart.Name, Namespace: a.namespace, Pinned: a.chart.Version, Ready: "0/0"}
		rel, err := latestHelmRelease(ctx, cs, a.namespace, a.release)
		if err != nil {
			return nil, fmt.Errorf("addon %s: %w", a.key, err)
		}
		if rel == nil {
			st.Status = "not installed"
			st.Problem = "no Helm release " + a.namespace + "/" + a.release + ": run rack up"
			out = append(out, st)
			continue
		}
		st.Chart, st.Version, st.Status, st.Revision = rel.Chart, rel.ChartVersion, rel.Status, rel.Revision
		ready, wanted, err := workloadPods(ctx, cs, a.namespace)
		if err != nil {
			return nil, fmt.Errorf("addon %s: %w", a.key, err)
		}
		st.Ready = fmt.Sprintf("%d/%d", ready, wanted)
		switch {
		case rel.Status != helmDeployed:
			st.Problem = fmt.Sprintf("release %s revision %d is %s: run rack up (helm -n %s history %s tells why)", a.release, rel.Revision, rel.Status, a.namespace, a.release)
		case ready < wanted:
			st.Problem = fmt.Sprintf("%d of %d pods not ready: kubectl -n %s get pods", wanted-ready, wanted, a.namespace)
		}
		out = append(out, st)
	}
	if lp := inv.Addons.LocalPV; lp != nil {
		st, err := localPVStatus(ctx, cs, inv)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// workloadPods adds up the ready and wanted pods of the Deployments,
// StatefulSets and DaemonSets in namespace.
func workloadPods(ctx context.Context, cs kubernetes.Interface, namespace string) (ready, wanted int32, err error) {
	ws, err := workloads(ctx, cs, namespace)
	if err != nil {
		return 0, 0, err
	}
	for _, w := range ws {
		ready += w.ready
		wanted += w.wanted
	}
	return ready, wanted, nil
}

// workload is a Deployment, StatefulSet or DaemonSet with its ready and
// wanted pods.
type workload struct {
	kind, name    string
	ready, wanted int32
	// why is a Deployment's failing condition, " (reason: message)".
	why string
}

// workloads reads namespace's Deployments, StatefulSets and DaemonSets:
// what `rack status` adds up and a timed-out release lists.
func workloads(ctx context.Context, cs kubernetes.Interface, namespace string) ([]workload, error) {
	var out []workload
	deps, err := cs.AppsV1().Deployments(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, d := range deps.Items {
		// unset replicas means one
		out = append(out, workload{"Deployment", d.Name, d.Status.ReadyReplicas, ptr.Deref(d.Spec.Replicas, 1), deploymentWhy(d.Status.Conditions)})
	}
	sets, err := cs.AppsV1().StatefulSets(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, s := range sets.Items {
		out = append(out, workload{"StatefulSet", s.Name, s.Status.ReadyReplicas, ptr.Deref(s.Spec.Replicas, 1), ""})
	}
	daemons, err := cs.AppsV1().DaemonSets(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, d := range daemons.Items {
		out = append(out, workload{"DaemonSet", d.Name, d.Status.NumberReady, d.Status.DesiredNumberScheduled, ""})
	}
	return out, nil
}

// localPVStatus: the class and every volume of the inventory exist.
func localPVStatus(ctx context.Context, cs kubernetes.Interface, inv *inventory.Inventory) (AddonStatus, error) {
	st := AddonStatus{Name: "localPV", Status: helmDeployed, Ready: "0/0"}
	class := inv.Addons.LocalPV.StorageClass
	var missing []string
	if _, err := cs.StorageV1().StorageClasses().Get(ctx, class, metav1.GetOptions{}); isNotFound(err) {
		missing = append(missing, "StorageClass "+class)
	} else if err != nil {
		return st, fmt.Errorf("addon localPV: %w", err)
	}
	for _, v := range inv.LocalVolumes() {
		if _, err := cs.CoreV1().PersistentVolumes().Get(ctx, v.Name, metav1.GetOptions{}); isNotFound(err) {
			missing = append(missing, "PersistentVolume "+v.Name)
		} else if err != nil {
			return st, fmt.Errorf("addon localPV: %w", err)
		}
	}
	if len(missing) > 0 {
		st.Status = "incomplete"
		st.Problem = "missing " + strings.Join(missing, ", ") + ": run rack up"
	}
	return st, nil
}

// WriteAddonsText prints the addons as a table.
func WriteAddonsText(w io.Writer, addons []AddonStatus) error {
	if len(addons) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDON\tCHART\tVERSION\tSTATUS\tREADY")
	for _, a := range addons {
		version := orDash(a.Version)
		if a.Version != "" && a.Pinned != "" && a.Version != a.Pinned {
			version += " (rack pins " + a.Pinned + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.Name, orDash(a.Chart), version, a.Status, a.Ready)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, a := range addons {
		if a.Problem != "" {
			fmt.Fprintf(w, "%s: %s\n", a.Name, a.Problem)
		}
	}
	return nil
}
