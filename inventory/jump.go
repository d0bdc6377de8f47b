package inventory

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Hop is one jump host of a bastion chain.
type Hop struct {
	User string // "" when not given
	Host string // an address or a host name (maybe an ~/.ssh/config alias)
	Port int    // 0 when not given
}

// String is the hop as OpenSSH writes it, [user@]host[:port].
func (h Hop) String() string {
	s := h.Host
	if h.Port != 0 || strings.Contains(s, ":") {
		if h.Port != 0 {
			s = net.JoinHostPort(h.Host, strconv.Itoa(h.Port))
		} else {
			s = "[" + s + "]"
		}
	}
	if h.User != "" {
		s = h.User + "@" + s
	}
	return s
}

// ParseJump reads a jump host chain as OpenSSH's ProxyJump does:
// "[user@]host[:port][,[user@]host[:port]…]", each hop optionally written
// ssh://…; an IPv6 address with a port needs brackets ([fe80::1]:22), a
// bare one (fe80::1) has none. It is the one bastion parser in rack.
func ParseJump(s string) ([]Hop, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var hops []Hop
	for _, part := range strings.Split(s, ",") {
		h, err := parseHop(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("jump host %q: %w", strings.TrimSpace(part), err)
		}
		hops = append(hops, h)
	}
	return hops, nil
}

func parseHop(s string) (Hop, error) {
	var h Hop
	s = strings.TrimPrefix(s, "ssh://")
	if i := strings.LastIndex(s, "@"); i >= 0 {
		h.User, s = s[:i], s[i+1:]
		if h.User == "" {
			return Hop{}, fmt.Errorf("empty user before @: write user@host:port")
		}
	}
	switch {
	case strings.HasPrefix(s, "["):
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			if !strings.HasSuffix(s, "]") {
				return Hop{}, fmt.Errorf("a bracketed address needs its closing ] (write [fe80::1]:22)")
			}
			host, port = strings.Trim(s, "[]"), ""
		}
		h.Host = host
		if port != "" {
			if h.Port, err = parsePort(port); err != nil {
				return Hop{}, err
			}
		}
	case strings.Count(s, ":") == 1:
		host, port, _ := strings.Cut(s, ":")
		p, err := parsePort(port)
		if err != nil {
			return Hop{}, err
		}
		h.Host, h.Port = host, p
	default: // a name, an IPv4 address, or a bare IPv6 address
		h.Host = s
	}
	if h.Host == "" || !isHost(h.Host) {
		return Hop{}, fmt.Errorf("%q is not an address or a host name: write user@host:port", h.Host)
	}
	return h, nil
}

func parsePort(p string) (int, error) {
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
		return 0, fmt.Errorf("port %q is not a TCP port (1-65535)", p)
	}
	return n, nil
}
