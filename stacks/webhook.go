package stacks

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"time"
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

// retryPolicy bounds the retries: attempts in all, wait in between.
type retryPolicy struct {
	attempts int
	wait     time.Duration
}

// The webhook answers within seconds of the controller starting; five
// tries 15 s apart give it a minute, then the error stands.
var defaultWebhookRetry = retryPolicy{attempts: 5, wait: 15 * time.Second}

func (p retryPolicy) orDefault() retryPolicy {
	if p.attempts == 0 {
		return defaultWebhookRetry
	}
	return p
}

// retryWebhook runs up, again while it fails only because MetalLB's
// webhook does not answer yet, at most p.attempts times in all. Each run
// is a whole `pulumi up`: what the failed one created stays, the rest is
// created by the next.
func retryWebhook(ctx context.Context, p retryPolicy, w io.Writer, up func() error) error {
	for attempt := 1; ; attempt++ {
		err := up()
		if !webhookNotReady(err) {
			return err
		}
		if attempt >= p.attempts {
			return fmt.Errorf("MetalLB's webhook did not answer in %d attempts over %v (is its controller running? kubectl -n metallb-system get pods,endpoints): %w",
				p.attempts, time.Duration(p.attempts-1)*p.wait, err)
		}
		fmt.Fprintf(w, "rack: MetalLB's webhook does not answer yet (it starts after its controller is ready, metallb issue 1597): trying again in %v (%d of %d)\n",
			p.wait, attempt+1, p.attempts)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (while waiting for MetalLB's webhook: %v)", err, ctx.Err())
		case <-time.After(p.wait):
		}
	}
}
