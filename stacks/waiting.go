package stacks

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/kubectl/pkg/util/podutils"
)

// helmTimedOut matches the provider's error for a release whose resources
// did not become ready within its timeout: all it names is the release.
var helmTimedOut = regexp.MustCompile(`Helm release "([a-z0-9.-]+)/[^"]+" was created,? but failed to initialize completely|Helm Release ([a-z0-9.-]+)/[^:]+: context deadline exceeded`)

// whatItWaitedFor adds to err, when it is a Helm release that timed out,
// the workloads of the release's namespace that are short of ready pods
// and why (a pod's phase, its failed condition or a container's waiting
// reason): "context deadline exceeded" alone leaves the user guessing.
// err is returned unchanged when it is something else or the cluster
// cannot be asked.
func whatItWaitedFor(ctx context.Context, err error, kubeconfig []byte) error {
	m := helmTimedOut.FindStringSubmatch(err.Error())
	if m == nil || kubeconfig == nil {
		return err
	}
	ns := m[1]
	if ns == "" {
		ns = m[2]
	}
	cs, _, cerr := kubeClients(kubeconfig)
	if cerr != nil {
		return err
	}
	// The run may have ended on Ctrl-C: the question is quick and still worth asking.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	lines, lerr := notReadyIn(ctx, cs, ns)
	if lerr != nil || len(lines) == 0 {
		return err
	}
	return &waitedFor{err: err, namespace: ns, lines: lines}
}

// waitedFor is a timed-out release's error with what was not ready.
type waitedFor struct {
	err       error
	namespace string
	lines     []string
}

func (w *waitedFor) Error() string {
	return fmt.Sprintf("%v\nnot ready in namespace %s (kubectl -n %s get pods tells more):\n  %s",
		w.err, w.namespace, w.namespace, strings.Join(w.lines, "\n  "))
}

func (w *waitedFor) Unwrap() error { return w.err }

// notReadyIn lists namespace's Deployments, StatefulSets and DaemonSets
// short of ready pods, then its pods that are not ready (at most five),
// each with the reason Kubernetes gives.
func notReadyIn(ctx context.Context, cs kubernetes.Interface, namespace string) ([]string, error) {
	ws, err := workloads(ctx, cs, namespace)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, w := range ws {
		if w.ready < w.wanted {
			out = append(out, fmt.Sprintf("%s %s: %d of %d ready%s", w.kind, w.name, w.ready, w.wanted, w.why))
		}
	}
	pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var waiting []string
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodSucceeded || podutils.IsPodReady(&p) {
			continue
		}
		waiting = append(waiting, "pod "+p.Name+podWhy(p))
	}
	sort.Strings(waiting)
	if n := len(waiting); n > 5 {
		waiting = append(waiting[:5], fmt.Sprintf("and %d more pods", n-5))
	}
	return append(out, waiting...), nil
}

// deploymentWhy is the message of a Deployment's failing condition: a
// ReplicaSet that could not be created, or a rollout past its deadline.
func deploymentWhy(conds []appsv1.DeploymentCondition) string {
	for _, c := range conds {
		if c.Status == corev1.ConditionFalse || c.Type == appsv1.DeploymentReplicaFailure && c.Status == corev1.ConditionTrue {
			if c.Type == appsv1.DeploymentAvailable {
				continue // says only what 0 of 1 says
			}
			return fmt.Sprintf(" (%s: %s)", c.Reason, c.Message)
		}
	}
	return ""
}

// podWhy says where a pod is and why it is not ready: being deleted, not
// scheduled (the scheduler's message), a container waiting (image pull,
// crash loop) or a failed readiness condition.
func podWhy(p corev1.Pod) string {
	where := ""
	if p.Spec.NodeName != "" {
		where = " on " + p.Spec.NodeName
	}
	if p.DeletionTimestamp != nil {
		return where + ": being deleted"
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return fmt.Sprintf("%s: %s, not scheduled: %s", where, p.Status.Phase, c.Message)
		}
	}
	for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		if w := s.State.Waiting; w != nil && w.Reason != "" && w.Reason != "PodInitializing" && w.Reason != "ContainerCreating" {
			msg := w.Reason
			if w.Message != "" {
				msg += ": " + w.Message
			}
			return fmt.Sprintf("%s: container %s %s", where, s.Name, msg)
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Message != "" {
			return fmt.Sprintf("%s: %s, %s", where, p.Status.Phase, c.Message)
		}
	}
	phase := string(p.Status.Phase)
	if phase == "" {
		phase = "no status yet"
	}
	return where + ": " + phase
}
