package stacks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/homelab/rack/addons/metallb"
)

// MetalLB's controller passes its readiness probe before its webhook
// serves (metallb issue 1597, seen on k3s): the first IPAddressPool create
// right after the chart can fail with
//
//	Internal error occurred: failed calling webhook "ipaddresspoolvalidationwebhook.metallb.io": failed to call webhook: Post "https://metallb-webhook-service.metallb-system.svc:443/...": dial tcp 10.43.12.7:443: connect: connection refused
//
// (or no endpoints, or a certificate the controller has not rotated in
// yet). The API server could not ask the webhook; a webhook that answers
// and refuses reads `admission webhook "…" denied the request` instead,
// and is never retried.
var metalLBWebhookNotReady = regexp.MustCompile(`failed calling webhook "[a-z0-9.-]+\.metallb\.io"`)

// webhookNotReady reports whether err is exactly that failure.
func webhookNotReady(err error) bool {
	return err != nil && metalLBWebhookNotReady.MatchString(err.Error())
}

// retryPolicy bounds the wait for the webhook: budget from the first
// failure, a probe every poll.
type retryPolicy struct {
	budget time.Duration
	poll   time.Duration
}

// The webhook usually answers within seconds of the controller starting,
// but a loaded machine (a Pi 3 starting every addon at once, or CI) has
// taken over a minute; five minutes of cheap probes cost nothing when it
// answers early.
var defaultWebhookRetry = retryPolicy{budget: 5 * time.Minute, poll: 5 * time.Second}

func (p retryPolicy) orDefault() retryPolicy {
	if p.budget == 0 {
		return defaultWebhookRetry
	}
	return p
}

// retryWebhook runs up, and again while it fails only because MetalLB's
// webhook does not answer yet. Between runs it waits for answers (a
// probe of the webhook itself, not a whole `pulumi up` every time), at
// most p.budget from the first failure. Each run is a whole `pulumi up`:
// what the failed one created stays, the rest is created by the next.
func retryWebhook(ctx context.Context, p retryPolicy, w io.Writer, answers func(context.Context) error, up func() error) error {
	var first, deadline time.Time
	for {
		err := up()
		if !webhookNotReady(err) {
			return err
		}
		if deadline.IsZero() {
			first = time.Now()
			deadline = first.Add(p.budget)
		}
		fmt.Fprintf(w, "rack: MetalLB's webhook does not answer yet (it starts after its controller is ready, metallb issue 1597): waiting for it, %v at most\n",
			time.Until(deadline).Round(time.Second))
		if werr := waitWebhook(ctx, p.poll, deadline, answers); werr != nil {
			return fmt.Errorf("MetalLB's webhook did not answer within %v (is its controller running? kubectl -n %s get pods,endpoints): %v; the last run: %w",
				p.budget, metallb.DefaultNamespace, werr, err)
		}
		fmt.Fprintf(w, "rack: MetalLB's webhook answers, %v after the first failure: running again\n", time.Since(first).Round(time.Second))
	}
}

// waitWebhook probes every poll until answers says the webhook answers
// (nil, or any error but "failed calling webhook": the next run shows
// that one), the deadline passes, or ctx ends.
func waitWebhook(ctx context.Context, poll time.Duration, deadline time.Time, answers func(context.Context) error) error {
	last := errors.New("not asked: no time left")
	for time.Now().Add(poll).Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
		pctx, cancel := context.WithDeadline(ctx, deadline)
		last = answers(pctx)
		expired := pctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !expired && !webhookNotReady(last) {
			return nil
		}
	}
	return fmt.Errorf("the last probe: %w", last)
}

var ipAddressPools = schema.GroupVersionResource{Group: "metallb.io", Version: "v1beta1", Resource: "ipaddresspools"}

// metalLBAnswers asks MetalLB's webhook for real: a server-side dry run of
// an IPAddressPool create goes through admission (the webhooks declare no
// side effects), and stores nothing. A pool the webhook refuses (say, one
// overlapping the inventory's) still proves it answers.
func metalLBAnswers(ctx context.Context, dyn dynamic.Interface) error {
	probe := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
		"metadata": map[string]any{"name": "rack-webhook-probe", "namespace": metallb.DefaultNamespace},
		// TEST-NET-1 (RFC 5737), never assigned: autoAssign off besides.
		"spec": map[string]any{"addresses": []any{"192.0.2.1/32"}, "autoAssign": false},
	}}
	_, err := dyn.Resource(ipAddressPools).Namespace(metallb.DefaultNamespace).
		Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	return err
}
