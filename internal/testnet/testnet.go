// Package testnet keeps the test rack's cluster traffic on this machine.
//
// A test cluster uses k3s' pod and service networks (inventory.DefaultClusterCIDR
// and inventory.DefaultServiceCIDR). Those are private ranges that this
// machine's default route would send off the machine: the API server calling a
// webhook Service (MetalLB's, Longhorn's) once did exactly that. So while any
// test control plane runs, both networks are routed to blackhole in the root
// network namespace, and every test host's namespace gets the same routes when
// it is created. More specific routes (a node's pod /24 via that node) still
// win, so the test rack can route inside itself.
//
// The root namespace's routes are shared by every process on the machine:
// each Hold registers its holder under a flock, and the last Release (or the
// next Hold after a crash, which sweeps dead holders) removes them.
package testnet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/homelab/rack/internal/flock"
	"github.com/homelab/rack/internal/procstat"
	"github.com/homelab/rack/inventory"
)

// CIDRs are the networks kept on the machine: the cluster's pod and service
// networks, from the one pair of constants rack, the test control plane and
// the fake k3s all read.
var CIDRs = []string{inventory.DefaultClusterCIDR, inventory.DefaultServiceCIDR}

const (
	stateDir   = "/run/rack-testnet"
	holdersDir = stateDir + "/holders"
	lockPath   = stateDir + "/lock"
)

// Hold routes CIDRs to blackhole in the root network namespace until release
// is called. Call it before anything that may connect to a Service or pod
// address starts (the control plane), and release after it has stopped.
func Hold(ctx context.Context) (release func() error, err error) {
	unlock, err := lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := sweep(); err != nil {
		return nil, err
	}
	if err := AddRoutes(ctx, ""); err != nil {
		return nil, err
	}
	self, err := procstat.Read(os.Getpid())
	if err != nil {
		return nil, err
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := fmt.Sprintf("%d-%d-%s", os.Getpid(), self.Start, hex.EncodeToString(b))
	holder := filepath.Join(holdersDir, name)
	if err := os.WriteFile(holder, nil, 0o600); err != nil {
		return nil, err
	}
	return func() error {
		unlock, err := lock(context.Background())
		if err != nil {
			return err
		}
		defer unlock()
		if err := os.Remove(holder); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return sweep()
	}, nil
}

// AddRoutes adds the blackhole routes in the named network namespace ("" is
// the root namespace). It is idempotent.
func AddRoutes(ctx context.Context, netns string) error {
	for _, cidr := range CIDRs {
		if err := ip(ctx, netns, "route", "replace", "blackhole", cidr); err != nil {
			return err
		}
	}
	return nil
}

// Check returns an error unless every CIDR is routed to blackhole in netns
// ("" is the root namespace).
func Check(ctx context.Context, netns string) error {
	out, err := ipOutput(ctx, netns, "route", "show", "type", "blackhole")
	if err != nil {
		return err
	}
	var missing []string
	for _, cidr := range CIDRs {
		if !strings.Contains(" "+strings.Join(strings.Fields(out), " ")+" ", " "+cidr+" ") {
			missing = append(missing, cidr)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("netns %q: no blackhole route for %s (routes: %q)", netns, strings.Join(missing, ", "), out)
	}
	return nil
}

// ProbeAddrs are one address at the top of each of CIDRs, port included,
// for tests that prove a connection fails locally. The top, because the
// controller manager hands out nodes' pod /24s from the bottom and a test
// that runs real pods routes those /24s from the root namespace into the
// test rack (more specific than the blackhole, and still on this machine):
// a probe of 10.42.0.10 beside it once waited for an answer from the rack.
var ProbeAddrs = func() []string {
	var out []string
	for _, cidr := range CIDRs {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			panic(err)
		}
		ip := n.IP.To4()
		last := make(net.IP, len(ip))
		for i := range ip {
			last[i] = ip[i] | ^n.Mask[i]
		}
		last[len(last)-1]--
		out = append(out, net.JoinHostPort(last.String(), "443"))
	}
	return out
}()

// DialFailsLocally connects to addr (a Service or pod address) and returns
// nil when the connection fails at once on this machine, as a blackhole route
// makes it, and an error describing what happened otherwise (it connected, or
// it waited for an answer from somewhere).
func DialFailsLocally(addr string) error {
	// Which route the kernel picks for it, before and after, for whoever
	// reads a failure: routes in the root namespace are shared.
	host, _, _ := net.SplitHostPort(addr)
	routeOf := func() string {
		route, err := ipOutput(context.Background(), "", "route", "get", host)
		if err != nil {
			return err.Error()
		}
		return strings.TrimSpace(route)
	}
	before := routeOf()
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	took := time.Since(start)
	if err == nil {
		c.Close()
		return fmt.Errorf("dial %s connected (to %s): the address is reachable from here", addr, c.RemoteAddr())
	}
	var errno syscall.Errno
	if errors.As(err, &errno) && (errno == syscall.EINVAL || errno == syscall.ENETUNREACH || errno == syscall.EHOSTUNREACH) && took < time.Second {
		return nil
	}
	return fmt.Errorf("dial %s failed after %v with %v: not the immediate local refusal of a blackhole route (ip route get %s before: %s; after: %s)",
		addr, took.Round(time.Millisecond), err, host, before, routeOf())
}

// sweep removes holders whose process is gone, then the root namespace's
// routes when no holder is left. Must hold the lock.
func sweep() error {
	ents, err := os.ReadDir(holdersDir)
	if err != nil {
		return err
	}
	live := 0
	for _, e := range ents {
		if holderAlive(e.Name()) {
			live++
			continue
		}
		if err := os.Remove(filepath.Join(holdersDir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if live > 0 {
		return nil
	}
	var errs []error
	for _, cidr := range CIDRs {
		if out, err := ipOutput(context.Background(), "", "route", "show", "type", "blackhole", cidr); err == nil && strings.TrimSpace(out) != "" {
			errs = append(errs, ip(context.Background(), "", "route", "del", "blackhole", cidr))
		}
	}
	return errors.Join(errs...)
}

// holderAlive reads a holder's name, "<pid>-<start time>-<random>", and
// reports whether that process still runs (the start time tells it from a
// later process that got the same pid).
func holderAlive(name string) bool {
	f := strings.SplitN(name, "-", 3)
	if len(f) != 3 {
		return false
	}
	pid, err1 := strconv.Atoi(f[0])
	start, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	st, err := procstat.Read(pid)
	return err == nil && !st.Zombie() && st.Start == start
}

// lock takes the machine-wide flock that serialises holders.
func lock(ctx context.Context) (func(), error) {
	if err := os.MkdirAll(holdersDir, 0o700); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	l, err := flock.Acquire(ctx, lockPath)
	if err != nil {
		return nil, err
	}
	return l.Unlock, nil
}

func ip(ctx context.Context, netns string, args ...string) error {
	_, err := ipOutput(ctx, netns, args...)
	return err
}

func ipOutput(ctx context.Context, netns string, args ...string) (string, error) {
	if netns != "" {
		args = append([]string{"-n", netns}, args...)
	}
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
