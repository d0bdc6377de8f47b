package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/kubectl/pkg/drain"
)

// AnnotationCordonedBy records on a Node that rack cordoned it, and for
// what: a node rack cordoned for an upgrade is expected to be cordoned when
// an interrupted `rack upgrade apply` resumes; any other cordon is the
// operator's and rack leaves it alone. Uncordon removes it.
const AnnotationCordonedBy = "rack.homelab/cordoned-by"

// Why rack cordoned a node (AnnotationCordonedBy's values).
const (
	CordonedByDrain   = "rack node drain"
	CordonedByUpgrade = "rack upgrade apply"
	CordonedByRemove  = "rack node remove"
)

// DefaultEvictRetry is how long a refused eviction (a PodDisruptionBudget's
// 429) waits before it is tried again, as kubectl drain waits.
const DefaultEvictRetry = 5 * time.Second

// DrainOptions are `rack node drain`'s flags (and what `rack upgrade apply`
// and `rack node remove` drain with).
type DrainOptions struct {
	// Timeout bounds the evictions (--timeout); 0 waits for ever.
	Timeout time.Duration
	// Force deletes pods no controller manages (they are gone for good).
	Force bool
	// DeleteEmptyDirData evicts pods with emptyDir volumes (their data is lost).
	DeleteEmptyDirData bool
	// GracePeriod is each pod's termination grace period in seconds; a
	// negative value keeps the pod's own (--grace-period, default -1).
	GracePeriod int
	// RetryDelay is the wait between evictions a PodDisruptionBudget
	// refused (default DefaultEvictRetry).
	RetryDelay time.Duration
	// By is recorded in AnnotationCordonedBy (default CordonedByDrain).
	By string
	// Out receives progress lines; nil discards them.
	Out io.Writer
}

// NewDrainer is the kubectl drain helper for the options. Pure: it builds
// the value and talks to nobody. DaemonSet pods are always left alone (their
// controller would put them straight back), and evictions go through the
// Eviction API, so PodDisruptionBudgets are honoured.
func NewDrainer(ctx context.Context, cs kubernetes.Interface, o DrainOptions) *drain.Helper {
	retry := o.RetryDelay
	if retry <= 0 {
		retry = DefaultEvictRetry
	}
	return &drain.Helper{
		Ctx:                  ctx,
		Client:               cs,
		Force:                o.Force,
		GracePeriodSeconds:   o.GracePeriod,
		IgnoreAllDaemonSets:  true,
		Timeout:              o.Timeout,
		DeleteEmptyDirData:   o.DeleteEmptyDirData,
		EvictErrorRetryDelay: retry,
		ChunkSize:            500,
		Out:                  io.Discard,
		ErrOut:               io.Discard,
	}
}

// DrainReport is what a drain did.
type DrainReport struct {
	Node string `json:"node"`
	// Evicted are the pods evicted (namespace/name).
	Evicted []string `json:"evicted"`
	// Warnings are kubectl drain's warnings (pods deleted although no
	// controller recreates them, emptyDir data lost).
	Warnings string        `json:"warnings,omitempty"`
	Duration time.Duration `json:"-"`
}

// Drain cordons the node (recording why in AnnotationCordonedBy) and evicts
// its pods through the Eviction API: a PodDisruptionBudget's refusal is
// retried, and reported ("waiting on PDB web: 0 disruptions allowed"), until
// o.Timeout. A drain that cannot start (pods no controller manages, emptyDir
// data) changes nothing; a drain that times out leaves the node cordoned and
// says so. Errors name the node and what to do.
func Drain(ctx context.Context, cs kubernetes.Interface, name string, o DrainOptions) (*DrainReport, error) {
	start := time.Now()
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	p := &drainProgress{out: out, cs: cs, ctx: ctx, seen: map[types.UID]int{}, shown: map[string]pdbShown{}}
	d := NewDrainer(ctx, cs, o)
	d.OnPodDeletionOrEvictionStarted = p.started
	d.OnPodDeletionOrEvictionFinished = p.finished

	node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("node %s is not in the cluster (kubectl get nodes lists those that are)", name)
		}
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	// Checked before the cordon: a drain that cannot go through changes nothing.
	if _, errs := d.GetPodsForDeletion(name); len(errs) > 0 {
		return nil, fmt.Errorf("node %s cannot be drained, nothing was changed: %s", name, drainRefusal(errs))
	}
	by := o.By
	if by == "" {
		by = CordonedByDrain
	}
	if err := Cordon(ctx, cs, node, by); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "node %s cordoned\n", name)

	list, errs := d.GetPodsForDeletion(name)
	if len(errs) > 0 {
		return nil, fmt.Errorf("node %s cannot be drained: %s; it stays cordoned (rack node uncordon %s undoes that)", name, drainRefusal(errs), name)
	}
	rep := &DrainReport{Node: name, Evicted: []string{}, Warnings: list.Warnings()}
	if rep.Warnings != "" {
		fmt.Fprintf(out, "warning: %s\n", rep.Warnings)
	}
	pods := list.Pods()
	if len(pods) > 0 {
		fmt.Fprintf(out, "evicting %d pod(s) from %s\n", len(pods), name)
	}
	err = d.DeleteOrEvictPods(pods)
	rep.Evicted = p.evicted()
	rep.Duration = time.Since(start)
	if err == nil {
		fmt.Fprintf(out, "node %s drained (%d pod(s) evicted) in %s\n", name, len(rep.Evicted), rep.Duration.Round(100*time.Millisecond))
		return rep, nil
	}
	if ctx.Err() != nil {
		return rep, fmt.Errorf("node %s: drain interrupted (%w); it stays cordoned: run rack node drain %s again, or rack node uncordon %s", name, ctx.Err(), name, name)
	}
	left := remaining(ctx, d, name)
	if o.Timeout > 0 && time.Since(start) >= o.Timeout {
		return rep, fmt.Errorf("node %s was not drained within %s (--timeout): %s; it stays cordoned: once the pods can move (a PodDisruptionBudget allows a disruption), run rack node drain %s again, or rack node uncordon %s to give up",
			name, o.Timeout, left, name, name)
	}
	return rep, fmt.Errorf("node %s: drain failed: %v (%s); it stays cordoned: rack node drain %s retries, rack node uncordon %s gives up", name, err, left, name, name)
}

// remaining describes the pods a failed drain left, with what holds them.
func remaining(ctx context.Context, d *drain.Helper, name string) string {
	list, _ := d.GetPodsForDeletion(name)
	if list == nil || len(list.Pods()) == 0 {
		return "no pod is left to evict"
	}
	var parts []string
	for _, pod := range list.Pods() {
		s := pod.Namespace + "/" + pod.Name
		if why := pdbsOf(ctx, d.Client, &pod); why != "" {
			s += " (" + why + ")"
		}
		parts = append(parts, s)
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d pod(s) still on it: %s", len(parts), strings.Join(parts, ", "))
}

// drainRefusal turns kubectl drain's filter errors into one message with
// rack's flags.
func drainRefusal(errs []error) string {
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	return strings.Join(msgs, "; ")
}

// Cordon marks the node unschedulable, recording in AnnotationCordonedBy
// that rack did it and why. The annotation goes first: a run killed between
// the two leaves an annotation on a schedulable node, which means nothing.
func Cordon(ctx context.Context, cs kubernetes.Interface, node *corev1.Node, by string) error {
	if node.Annotations[AnnotationCordonedBy] != by {
		if err := annotate(ctx, cs, node.Name, by); err != nil {
			return fmt.Errorf("node %s: recording the cordon: %w", node.Name, err)
		}
	}
	h := &drain.Helper{Ctx: ctx, Client: cs}
	if err := drain.RunCordonOrUncordon(h, node, true); err != nil {
		return fmt.Errorf("node %s: %w", node.Name, err)
	}
	return nil
}

// Uncordon makes the node schedulable again and forgets why rack cordoned it.
func Uncordon(ctx context.Context, cs kubernetes.Interface, name string) error {
	node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("node %s is not in the cluster (kubectl get nodes lists those that are)", name)
		}
		return fmt.Errorf("node %s: %w", name, err)
	}
	h := &drain.Helper{Ctx: ctx, Client: cs}
	if err := drain.RunCordonOrUncordon(h, node, false); err != nil {
		return fmt.Errorf("node %s: %w", name, err)
	}
	if _, ok := node.Annotations[AnnotationCordonedBy]; ok {
		if err := annotate(ctx, cs, name, ""); err != nil {
			return fmt.Errorf("node %s: %w", name, err)
		}
	}
	return nil
}

// CordonedBy says who cordoned a node: rack's reason, "" when it is not
// cordoned, or "someone else" when rack did not.
func CordonedBy(n *corev1.Node) string {
	if !n.Spec.Unschedulable {
		return ""
	}
	if by := n.Annotations[AnnotationCordonedBy]; by != "" {
		return by
	}
	return CordonedElsewhere
}

// CordonedElsewhere is CordonedBy's answer for a cordon rack did not make.
const CordonedElsewhere = "someone else"

// annotate sets AnnotationCordonedBy, or removes it when by is "".
func annotate(ctx context.Context, cs kubernetes.Interface, name, by string) error {
	var v any
	if by != "" {
		v = by
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnotationCordonedBy: v}}})
	_, err := cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "rack"})
	return err
}

// drainProgress turns kubectl drain's callbacks into rack's progress lines:
// one line per pod evicted, and, while a PodDisruptionBudget refuses an
// eviction, what the budget allows.
type drainProgress struct {
	mu    sync.Mutex
	out   io.Writer
	cs    kubernetes.Interface
	ctx   context.Context
	seen  map[types.UID]int
	done  []string
	shown map[string]pdbShown
}

type pdbShown struct {
	msg string
	at  time.Time
}

// pdbRepeat is how often an unchanged PDB wait is reported again.
const pdbRepeat = 10 * time.Second

func (p *drainProgress) started(pod *corev1.Pod, _ bool) {
	p.mu.Lock()
	p.seen[pod.UID]++
	attempt := p.seen[pod.UID]
	p.mu.Unlock()
	if attempt == 1 {
		p.printf("evicting pod %s/%s\n", pod.Namespace, pod.Name)
		return
	}
	// A retry: the last eviction was refused (429), which is a PodDisruptionBudget.
	for _, w := range blockingPDBs(p.ctx, p.cs, pod) {
		p.mu.Lock()
		last, ok := p.shown[w.key]
		show := !ok || last.msg != w.msg || time.Since(last.at) >= pdbRepeat
		if show {
			p.shown[w.key] = pdbShown{msg: w.msg, at: time.Now()}
		}
		p.mu.Unlock()
		if show {
			p.printf("%s (pod %s/%s)\n", w.msg, pod.Namespace, pod.Name)
		}
	}
}

func (p *drainProgress) finished(pod *corev1.Pod, _ bool, err error) {
	if err != nil {
		p.printf("pod %s/%s: %v\n", pod.Namespace, pod.Name, err)
		return
	}
	p.mu.Lock()
	p.done = append(p.done, pod.Namespace+"/"+pod.Name)
	p.mu.Unlock()
	p.printf("pod %s/%s evicted\n", pod.Namespace, pod.Name)
}

func (p *drainProgress) evicted() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := append([]string{}, p.done...)
	sort.Strings(out)
	return out
}

func (p *drainProgress) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, format, args...)
}

type pdbWait struct{ key, msg string }

// blockingPDBs are the PodDisruptionBudgets guarding pod, each as the line
// rack prints while it waits on it.
func blockingPDBs(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod) []pdbWait {
	list, err := cs.PolicyV1().PodDisruptionBudgets(pod.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return []pdbWait{{key: "?", msg: fmt.Sprintf("waiting: the eviction was refused (429) and the PodDisruptionBudgets could not be read: %v", err)}}
	}
	var out []pdbWait
	for i, pdb := range list.Items {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		out = append(out, pdbWait{key: pdb.Namespace + "/" + pdb.Name, msg: PDBWaitLine(&list.Items[i])})
	}
	if len(out) == 0 {
		out = append(out, pdbWait{key: "429", msg: "waiting: the API server refused the eviction (429 Too Many Requests) and will be asked again"})
	}
	return out
}

// PDBWaitLine is the line rack prints while a budget holds an eviction up:
// "waiting on PDB web: 0 disruptions allowed (2 healthy, 2 needed)".
func PDBWaitLine(pdb *policyv1.PodDisruptionBudget) string {
	return fmt.Sprintf("waiting on PDB %s: %d disruptions allowed (%d healthy, %d needed)",
		pdb.Name, pdb.Status.DisruptionsAllowed, pdb.Status.CurrentHealthy, pdb.Status.DesiredHealthy)
}

// pdbsOf names the budgets guarding a pod and what they allow, for errors.
func pdbsOf(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod) string {
	var parts []string
	for _, w := range blockingPDBs(ctx, cs, pod) {
		if w.key == "429" || w.key == "?" {
			continue
		}
		parts = append(parts, strings.TrimPrefix(w.msg, "waiting on "))
	}
	return strings.Join(parts, "; ")
}
