package inventory

import (
	"fmt"
	"net/netip"
	"strings"
)

// k3s' default cluster networks (`k3s server --cluster-cidr` and
// `--service-cidr`). rack checks addresses against them, and the test rack
// reads them too: its control plane uses them, and it routes both to
// blackhole on this machine so no test packet for a Service or a pod can
// leave it.
const (
	DefaultClusterCIDR = "10.42.0.0/16"
	DefaultServiceCIDR = "10.43.0.0/16"
)

// Range is an inclusive address range, from either "a-b" or a CIDR. It is
// the one place rack does address arithmetic (MetalLB pools, cluster CIDRs).
type Range struct {
	First, Last netip.Addr
	Text        string
}

// ParseRange accepts the two forms MetalLB accepts: "a.b.c.d-e.f.g.h" and CIDRs.
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Range{}, fmt.Errorf("%q is not a CIDR like 192.168.1.240/28", s)
		}
		if p.Masked() != p {
			return Range{}, fmt.Errorf("%q has host bits set: did you mean %s?", s, p.Masked())
		}
		return Range{First: p.Addr(), Last: lastAddr(p), Text: s}, nil
	}
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return Range{}, fmt.Errorf("%q is neither a range like 192.168.1.210-192.168.1.250 nor a CIDR like 192.168.1.240/28", s)
	}
	first, err1 := netip.ParseAddr(strings.TrimSpace(a))
	last, err2 := netip.ParseAddr(strings.TrimSpace(b))
	switch {
	case err1 != nil || err2 != nil:
		return Range{}, fmt.Errorf("%q is not a range of two IP addresses like 192.168.1.210-192.168.1.250", s)
	case first.Is4() != last.Is4():
		return Range{}, fmt.Errorf("%q mixes IPv4 and IPv6", s)
	case last.Less(first):
		return Range{}, fmt.Errorf("%q ends before it starts: write the lower address first", s)
	}
	return Range{First: first, Last: last, Text: s}, nil
}

// mustRange parses a range rack itself defines.
func mustRange(s string) Range {
	r, err := ParseRange(s)
	if err != nil {
		panic(err)
	}
	return r
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Contains reports whether a is in the range.
func (r Range) Contains(a netip.Addr) bool {
	a = a.Unmap()
	return a.Is4() == r.First.Is4() && !a.Less(r.First) && !r.Last.Less(a)
}

// Overlaps reports whether the ranges share an address.
func (r Range) Overlaps(o Range) bool {
	return r.First.Is4() == o.First.Is4() && !r.Last.Less(o.First) && !o.Last.Less(r.First)
}

// Network is one of the cluster's internal networks.
type Network struct {
	Name  string // "pod network (--cluster-cidr)" or "service network (--service-cidr)"
	Range Range
}

// ClusterNetworks are the pod and service networks the cluster uses: k3s'
// defaults unless cluster.k3s.args sets --cluster-cidr or --service-cidr.
// A value that does not parse is left to k3s to refuse; the default stands in.
func (inv *Inventory) ClusterNetworks() []Network {
	cluster, service := DefaultClusterCIDR, DefaultServiceCIDR
	for _, a := range inv.Cluster.K3s.Args {
		if v, ok := strings.CutPrefix(a, "--cluster-cidr="); ok {
			cluster = v
		}
		if v, ok := strings.CutPrefix(a, "--service-cidr="); ok {
			service = v
		}
	}
	var out []Network
	for _, n := range []struct{ name, cidr string }{
		{"pod network (--cluster-cidr)", cluster},
		{"service network (--service-cidr)", service},
	} {
		r, err := ParseRange(n.cidr)
		if err != nil {
			r = mustRange(map[string]string{cluster: DefaultClusterCIDR, service: DefaultServiceCIDR}[n.cidr])
		}
		out = append(out, Network{Name: n.name, Range: r})
	}
	return out
}
