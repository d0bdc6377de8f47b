package stacks

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/homelab/rack/internal/testenv"
)

// Errors as `pulumi up` reports them (through the Automation API) when the
// API server cannot call MetalLB's webhook, and when the webhook answers
// and refuses.
const (
	notAnswering = `failed to run update: exit status 255
code: 255
stdout: Updating (lab):
    kubernetes:metallb.io/v1beta1:IPAddressPool metallb-production  error: resource "urn:pulumi:lab::rack::rack:addons:MetalLB$kubernetes:metallb.io/v1beta1:IPAddressPool::metallb-production" was not successfully created by the Kubernetes API server: Internal error occurred: failed calling webhook "ipaddresspoolvalidationwebhook.metallb.io": failed to call webhook: Post "https://metallb-webhook-service.metallb-system.svc:443/validate-metallb-io-v1beta1-ipaddresspool?timeout=10s": dial tcp 10.43.12.7:443: connect: connection refused
stderr:
`
	noEndpoints = `Internal error occurred: failed calling webhook "l2advertisementvalidationwebhook.metallb.io": failed to call webhook: Post "https://metallb-webhook-service.metallb-system.svc:443/validate-metallb-io-v1beta1-l2advertisement?timeout=10s": no endpoints available for service "metallb-webhook-service"`
	badCert     = `Internal error occurred: failed calling webhook "bgppeervalidationwebhook.metallb.io": failed to call webhook: Post "https://metallb-webhook-service.metallb-system.svc:443/validate-metallb-io-v1beta2-bgppeer?timeout=10s": tls: failed to verify certificate: x509: certificate signed by unknown authority`
	denied      = `admission webhook "ipaddresspoolvalidationwebhook.metallb.io" denied the request: CIDR "10.0.1.10/32" in pool "a" overlaps with already defined CIDR "10.0.1.10/32"`
	otherHook   = `Internal error occurred: failed calling webhook "validator.longhorn.io": failed to call webhook: Post "https://longhorn-admission-webhook.longhorn-system.svc:9502/v1/webhook/validation?timeout=10s": no endpoints available`
)

func TestWebhookNotReady(t *testing.T) {
	for name, tt := range map[string]struct {
		msg  string
		want bool
	}{
		"connection refused":          {notAnswering, true},
		"no endpoints":                {noEndpoints, true},
		"certificate not yet in":      {badCert, true},
		"the webhook refuses: no":     {denied, false},
		"another addon's webhook: no": {otherHook, false},
		"unrelated":                   {"context deadline exceeded", false},
	} {
		if got := webhookNotReady(errors.New(tt.msg)); got != tt.want {
			t.Errorf("%s: webhookNotReady = %v, want %v", name, got, tt.want)
		}
	}
	if webhookNotReady(nil) {
		t.Error("nil is not a webhook failure")
	}
}

func TestRetryWebhook(t *testing.T) {
	p := retryPolicy{budget: time.Second, poll: time.Millisecond}
	answering := func(context.Context) error { return nil }
	// A webhook that refuses the probe answers all the same.
	refusing := func(context.Context) error { return errors.New(denied) }
	silent := func(context.Context) error { return errors.New(badCert) }

	t.Run("until it answers", func(t *testing.T) {
		for name, answers := range map[string]func(context.Context) error{"answering": answering, "refusing": refusing} {
			var progress testenv.Buffer
			calls := 0
			err := retryWebhook(context.Background(), p, &progress, answers, func() error {
				calls++
				if calls < 3 {
					return errors.New(notAnswering)
				}
				return nil
			})
			if err != nil || calls != 3 {
				t.Fatalf("%s: err %v after %d runs, want success on the third", name, err, calls)
			}
			out := progress.String()
			if strings.Count(out, "MetalLB's webhook does not answer yet") != 2 || strings.Count(out, "MetalLB's webhook answers, ") != 2 {
				t.Errorf("%s: want a note per failed run and per answer:\n%s", name, out)
			}
		}
	})

	t.Run("probes, not runs, while it is silent", func(t *testing.T) {
		probes, calls := 0, 0
		answers := func(context.Context) error {
			if probes++; probes < 5 {
				return errors.New(noEndpoints)
			}
			return nil
		}
		err := retryWebhook(context.Background(), p, &testenv.Buffer{}, answers, func() error {
			if calls++; calls == 1 {
				return errors.New(notAnswering)
			}
			return nil
		})
		if err != nil || calls != 2 || probes != 5 {
			t.Errorf("err %v, %d runs and %d probes: want 2 runs, the second after the fifth probe answered", err, calls, probes)
		}
	})

	t.Run("bounded, with the cause", func(t *testing.T) {
		p := retryPolicy{budget: 50 * time.Millisecond, poll: 5 * time.Millisecond}
		calls := 0
		start := time.Now()
		err := retryWebhook(context.Background(), p, &testenv.Buffer{}, silent, func() error { calls++; return errors.New(noEndpoints) })
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("gave up after %v, budget %v", took, p.budget)
		}
		if calls != 1 {
			t.Errorf("%d runs, want 1: the probe never answered", calls)
		}
		for _, want := range []string{"did not answer within 50ms", "the last probe: Internal error occurred: failed calling webhook", "the last run: Internal error occurred", "no endpoints available", "certificate signed by unknown authority"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v: want %q", err, want)
			}
		}
	})

	t.Run("bounded when the probe answers but the runs still fail", func(t *testing.T) {
		p := retryPolicy{budget: 50 * time.Millisecond, poll: 5 * time.Millisecond}
		calls := 0
		err := retryWebhook(context.Background(), p, &testenv.Buffer{}, answering, func() error { calls++; return errors.New(notAnswering) })
		if err == nil || !strings.Contains(err.Error(), "did not answer within 50ms") || calls < 2 {
			t.Errorf("err %v after %d runs", err, calls)
		}
	})

	t.Run("other errors at once", func(t *testing.T) {
		for _, msg := range []string{denied, otherHook, "boom"} {
			calls := 0
			err := retryWebhook(context.Background(), p, &testenv.Buffer{}, silent, func() error { calls++; return errors.New(msg) })
			if calls != 1 || err == nil || err.Error() != msg {
				t.Errorf("%q: %d calls, err %v; want one call and the error unchanged", msg, calls, err)
			}
		}
	})

	t.Run("cancelled while waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		err := retryWebhook(ctx, retryPolicy{budget: time.Hour, poll: time.Minute}, &testenv.Buffer{}, silent, func() error { cancel(); return errors.New(notAnswering) })
		if err == nil || !strings.Contains(err.Error(), "context canceled") {
			t.Errorf("error %v", err)
		}
	})
}

func TestEngineCause(t *testing.T) {
	got := engineCause(errors.New(notAnswering))
	want := "failed to run update: exit status 255\n" +
		`  kubernetes:metallb.io/v1beta1:IPAddressPool metallb-production  error: resource "urn:pulumi:lab::rack::rack:addons:MetalLB$kubernetes:metallb.io/v1beta1:IPAddressPool::metallb-production" was not successfully created`
	if !strings.HasPrefix(got, want) || strings.Contains(got, "Updating (lab)") || strings.Count(got, "\n") != 1 {
		t.Errorf("engineCause:\n%s", got)
	}
	// Advice and cause, both shown.
	e := &explained{advice: errors.New("do this"), cause: errors.New(notAnswering)}
	if s := e.Error(); !strings.HasPrefix(s, "do this\ncause: failed to run update") || !strings.Contains(s, "connection refused") {
		t.Errorf("explained:\n%s", s)
	}
	if !errors.Is(e, e.cause) {
		t.Error("the cause does not match errors.Is")
	}
}
