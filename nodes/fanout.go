package nodes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// FanOutOptions tune FanOut.
type FanOutOptions struct {
	// Concurrency bounds the nodes worked on at once (default 10).
	Concurrency int
	// Serial works on one node at a time, in the order given (upgrades,
	// etcd members joining one by one).
	Serial bool
	// StopOnError skips the nodes not yet started once one fails; their
	// results say so. Without it the other nodes always continue.
	StopOnError bool
	// Progress shows what each node is doing; nil shows nothing.
	Progress Progress
	// Connect tunes the connections. Its Output is ignored when Progress is
	// set: command output then goes through the progress display.
	Connect Options
}

// Result is the outcome on one node.
type Result struct {
	Node     string
	Err      error
	Duration time.Duration
	// BytesSent is the payload uploaded to the node (0 on a converged rerun).
	BytesSent int64
}

// OK reports whether the step succeeded.
func (r Result) OK() bool { return r.Err == nil }

// errSkipped marks nodes never started because the run was stopped.
var errSkipped = errors.New("not started")

// FanOut connects to every target and runs step on it, up to Concurrency at
// once (or one by one, in order, when Serial). A node's failure does not
// stop the others unless StopOnError. Cancelling ctx (Ctrl-C) stops
// cleanly: running steps see the cancellation (uploads remove their temp
// files), nodes not yet started are reported as not started, and FanOut
// returns only when every step has returned. Results are in target order;
// every error names its node.
func FanOut(ctx context.Context, targets []Target, o FanOutOptions, step func(ctx context.Context, h *Host) error) []Result {
	if o.Concurrency <= 0 {
		o.Concurrency = 10
	}
	if o.Serial {
		o.Concurrency = 1
	}
	copts := o.Connect
	if copts.Credentials == nil {
		// One key cache for the whole run: one passphrase prompt, not one per node.
		copts.Credentials = NewCredentials(copts.Getenv, copts.Prompt)
	}
	progress := o.Progress
	if progress == nil {
		progress = nopProgress{}
	}
	for _, t := range targets {
		progress.Add(t.Name)
	}

	results := make([]Result, len(targets))
	var stopped atomic.Bool
	skipReason := func() string {
		if err := ctx.Err(); err != nil {
			return err.Error()
		}
		if stopped.Load() {
			return "an earlier node failed"
		}
		return ""
	}
	run := func(i int) {
		results[i] = runOne(ctx, targets[i], copts, progress, step)
		if results[i].Err != nil && o.StopOnError {
			stopped.Store(true)
		}
	}
	sem := make(chan struct{}, o.Concurrency)
	var wg sync.WaitGroup
	for i, t := range targets {
		results[i].Node = t.Name
		acquired := false
		if !o.Serial {
			select {
			case sem <- struct{}{}:
				acquired = true
			case <-ctx.Done():
			}
		}
		if reason := skipReason(); reason != "" {
			if acquired {
				<-sem
			}
			results[i].Err = fmt.Errorf("%s: %w (%s)", t.Name, errSkipped, reason)
			progress.Done(t.Name, results[i].Err, 0)
			continue
		}
		if o.Serial {
			run(i)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			run(i)
		}()
	}
	wg.Wait()
	progress.Finish()
	return results
}

func runOne(ctx context.Context, t Target, o Options, p Progress, step func(context.Context, *Host) error) (r Result) {
	r.Node = t.Name
	start := time.Now()
	p.Start(t.Name)
	defer func() {
		if v := recover(); v != nil {
			r.Err = fmt.Errorf("%s: panic in step: %v\n%s", t.Name, v, debug.Stack())
		}
		r.Duration = time.Since(start)
		p.Done(t.Name, r.Err, r.Duration)
	}()
	p.Step(t.Name, "connecting")
	o.Output = nil
	h, err := Connect(ctx, t, o)
	if err != nil {
		r.Err = nameError(t.Name, err)
		return r
	}
	defer h.Close()
	h.line = func(s string) { p.Line(t.Name, s) }
	h.step = func(s string) { p.Step(t.Name, s) }
	p.Step(t.Name, "running")
	err = step(ctx, h)
	r.BytesSent = h.BytesSent()
	if err != nil {
		r.Err = nameError(t.Name, err)
	}
	return r
}

// nameError makes sure an error names its node.
func nameError(node string, err error) error {
	if strings.HasPrefix(err.Error(), node+":") {
		return err
	}
	return fmt.Errorf("%s: %w", node, err)
}

// Errors joins the failures of a fan-out (nil when every node succeeded).
func Errors(results []Result) error {
	var errs []error
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
	}
	return errors.Join(errs...)
}

// WriteSummary prints one row per node: status, duration, bytes sent, error.
func WriteSummary(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATUS\tDURATION\tSENT\tERROR")
	failed := 0
	for _, r := range results {
		status := "ok"
		msg := ""
		switch {
		case errors.Is(r.Err, errSkipped):
			status = "skipped"
			msg = firstLine(r.Err.Error())
		case r.Err != nil:
			status = "FAILED"
			msg = firstLine(r.Err.Error())
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Node, status, r.Duration.Round(10*time.Millisecond), humanBytes(r.BytesSent), msg)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d of %d nodes ok\n", len(results)-failed-countSkipped(results), len(results))
	return err
}

func countSkipped(results []Result) int {
	n := 0
	for _, r := range results {
		if errors.Is(r.Err, errSkipped) {
			n++
		}
	}
	return n
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
