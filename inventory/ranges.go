package inventory

import (
	"fmt"
	"net/netip"
	"strings"
)

// ipRange is an inclusive address range, from either "a-b" or a CIDR.
type ipRange struct {
	first, last netip.Addr
	text        string
}

// parseRange accepts the two forms MetalLB accepts: "a.b.c.d-e.f.g.h" and CIDRs.
func parseRange(s string) (ipRange, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return ipRange{}, fmt.Errorf("%q is not a CIDR like 192.168.1.240/28", s)
		}
		if p.Masked() != p {
			return ipRange{}, fmt.Errorf("%q has host bits set: did you mean %s?", s, p.Masked())
		}
		return ipRange{first: p.Addr(), last: lastAddr(p), text: s}, nil
	}
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return ipRange{}, fmt.Errorf("%q is neither a range like 192.168.1.210-192.168.1.250 nor a CIDR like 192.168.1.240/28", s)
	}
	first, err1 := netip.ParseAddr(strings.TrimSpace(a))
	last, err2 := netip.ParseAddr(strings.TrimSpace(b))
	switch {
	case err1 != nil || err2 != nil:
		return ipRange{}, fmt.Errorf("%q is not a range of two IP addresses like 192.168.1.210-192.168.1.250", s)
	case first.Is4() != last.Is4():
		return ipRange{}, fmt.Errorf("%q mixes IPv4 and IPv6", s)
	case last.Less(first):
		return ipRange{}, fmt.Errorf("%q ends before it starts: write the lower address first", s)
	}
	return ipRange{first: first, last: last, text: s}, nil
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

func (r ipRange) contains(a netip.Addr) bool {
	a = a.Unmap()
	return a.Is4() == r.first.Is4() && !a.Less(r.first) && !r.last.Less(a)
}

func (r ipRange) overlaps(o ipRange) bool {
	return r.first.Is4() == o.first.Is4() && !r.last.Less(o.first) && !o.last.Less(r.first)
}
