package k3s

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/kube"
)

// Options for planning and applying. Everything is passed in; nothing is global.
type Options struct {
	Binaries Binaries
	// Resolver turns inventory nodes into SSH targets (~/.ssh/config etc.).
	Resolver nodes.Resolver
	// FanOut carries the concurrency limit, progress display and SSH options.
	FanOut nodes.FanOutOptions
	// ReadyTimeout (--timeout) bounds every wait on a node: a service
	// restart, the Node becoming Ready (default 5m).
	ReadyTimeout time.Duration
	// RebootTimeout bounds a Raspberry Pi's reboot (default 5m).
	RebootTimeout time.Duration
	// LockWait bounds the wait for another package manager (default 10m).
	LockWait time.Duration
	// Kubeconfig is the file the cluster's context is merged into; "" skips it.
	Kubeconfig string
	// Only restricts the work to these nodes (and the first server they need).
	Only []string
}

func (o Options) readyTimeout() time.Duration {
	if o.ReadyTimeout > 0 {
		return o.ReadyTimeout
	}
	return 5 * time.Minute
}

func (o Options) rebootTimeout() time.Duration {
	if o.RebootTimeout > 0 {
		return o.RebootTimeout
	}
	return 5 * time.Minute
}

// NewOptions are the defaults for an inventory: the binary cache, its airgap
// folder resolved against the inventory's folder, and the user's kubeconfig.
func NewOptions(inv *inventory.Inventory) (Options, error) {
	cache, err := DefaultCacheDir()
	if err != nil {
		return Options{}, err
	}
	airgap := inv.Cluster.K3s.Airgap
	if airgap != "" && !filepath.IsAbs(airgap) {
		airgap = filepath.Join(inv.Dir(), airgap)
	}
	kc, err := kube.DefaultPath()
	if err != nil {
		return Options{}, err
	}
	return Options{Binaries: Binaries{CacheDir: cache, Airgap: airgap}, Kubeconfig: kc}, nil
}

// Plan is what `rack up --nodes-only` would do: steps on this machine (the
// token) and on every node. It is data: `rack plan` prints it, Apply runs the
// same steps.
type Plan struct {
	Cluster string `json:"cluster"`
	Version string `json:"version"`
	// Local are the steps on this machine, before any node is touched.
	Local []nodes.Step `json:"local"`
	Nodes []NodePlan   `json:"nodes"`

	x       *run
	token   Token
	targets map[string]nodes.Target
}

// Changes counts the nodes the plan touches.
func (p *Plan) Changes() int { return countChanges(p.Nodes) }

// ChangesOnly refuses a plan that changes a node other than name: a command
// that works on one node (rack node add) leaves the others to rack up. The
// plan may hold other nodes unchanged, like the first server it reads the
// kubeconfig from.
func (p *Plan) ChangesOnly(name string) error {
	for _, np := range p.Nodes {
		if np.Node != name && np.Changes() {
			return fmt.Errorf("this changes %s only, but %s's plan changes it too (%s): run rack up first", name, np.Node, strings.Join(np.Reasons, "; "))
		}
	}
	return nil
}

// countChanges counts the node plans that change something.
func countChanges(plans []NodePlan) int {
	n := 0
	for _, np := range plans {
		if np.Changes() {
			n++
		}
	}
	return n
}

// Problems lists the nodes whose plan cannot be carried out.
func (p *Plan) Problems() []NodePlan {
	var out []NodePlan
	for _, np := range p.Nodes {
		if np.Action == ActionRefused || np.Action == ActionUnreachable {
			out = append(out, np)
		}
	}
	return out
}

// Outcome is what Apply did.
type Outcome struct {
	Results []nodes.Result
	// Kubeconfig is the cluster's admin kubeconfig (nil when the first
	// server could not be reached).
	Kubeconfig *kube.Kubeconfig
	// BytesSent is the payload uploaded to all nodes together.
	BytesSent int64
}

// ErrRefused is returned when a plan has nodes rack must not touch.
var ErrRefused = errors.New("refused")

// Apply runs a plan's steps: first those on this machine, then the first
// server, the other servers one at a time (each joins embedded etcd), then
// the agents in parallel. Unreachable nodes fail on their own; the others go
// on. A refused node stops everything before any change.
func Apply(ctx context.Context, plan *Plan, o Options) (*Outcome, error) {
	if bad := plan.refused(); len(bad) > 0 {
		var lines []string
		for _, np := range bad {
			lines = append(lines, np.Node+": "+strings.Join(np.Reasons, "; "))
		}
		return nil, fmt.Errorf("%w: nothing was changed:\n  %s", ErrRefused, strings.Join(lines, "\n  "))
	}
	x := plan.x
	x.opts = o
	defer x.files.Close()
	if err := plan.token.Keep(); err != nil {
		return nil, err
	}
	inv := x.inv
	out := &Outcome{}
	byName := map[string]NodePlan{}
	for _, np := range plan.Nodes {
		byName[np.Node] = np
	}
	// Only nodes with something to do are contacted, and the first server,
	// whose kubeconfig every wait (and the user's kubeconfig) needs.
	first := ""
	if s := inv.Servers(); len(s) > 0 {
		first = s[0].Name
	}
	var servers, agents []nodes.Target
	for _, n := range selectNodes(inv, o.Only) {
		if np := byName[n.Name]; !np.Changes() && np.Action != ActionUnreachable && n.Name != first {
			continue
		}
		if n.IsServer() {
			servers = append(servers, plan.targets[n.Name])
		} else {
			agents = append(agents, plan.targets[n.Name])
		}
	}
	step := func(ctx context.Context, h *nodes.Host) error {
		np := byName[h.Target.Name]
		if np.Action == ActionUnreachable {
			return fmt.Errorf("unreachable: %s", strings.Join(np.Reasons, "; "))
		}
		return nodes.RunSteps(ctx, h, np.Steps)
	}

	fo := o.FanOut
	fo.Serial, fo.StopOnError = true, true
	if len(servers) > 0 && servers[0].Name == first {
		// The first server alone: nothing can join before it is up.
		res := nodes.FanOut(ctx, servers[:1], fo, step)
		out.Results = append(out.Results, res...)
		if res[0].Err != nil {
			reason := fmt.Errorf("skipped: the first server %s failed", servers[0].Name)
			for _, t := range append(append([]nodes.Target{}, servers[1:]...), agents...) {
				out.Results = append(out.Results, nodes.Result{Node: t.Name, Err: reason})
			}
			return out, sumBytes(out)
		}
		servers = servers[1:]
	}
	// Further servers one at a time: each joins etcd, and losing quorum to
	// two half-joined members at once is how clusters die.
	out.Results = append(out.Results, nodes.FanOut(ctx, servers, fo, step)...)
	if len(agents) > 0 {
		fo.Serial, fo.StopOnError = false, false
		out.Results = append(out.Results, nodes.FanOut(ctx, agents, fo, step)...)
	}
	x.mu.Lock()
	out.Kubeconfig = x.kc
	x.mu.Unlock()
	if out.Kubeconfig != nil {
		// rack's own copy, so its commands never depend on the user's kubeconfig.
		if err := out.Kubeconfig.Save(inv.State().Kubeconfig()); err != nil {
			return out, err
		}
		if o.Kubeconfig != "" {
			if err := out.Kubeconfig.Merge(o.Kubeconfig); err != nil {
				return out, fmt.Errorf("write kubeconfig %s: %w", o.Kubeconfig, err)
			}
		}
	}
	return out, sumBytes(out)
}

func sumBytes(out *Outcome) error {
	for _, r := range out.Results {
		out.BytesSent += r.BytesSent
	}
	return nodes.Errors(out.Results)
}

func (p *Plan) refused() []NodePlan {
	var out []NodePlan
	for _, np := range p.Nodes {
		if np.Action == ActionRefused {
			out = append(out, np)
		}
	}
	return out
}
