package testcluster

import "net"

// servingSANs splits the extra subject alternative names into IPs and DNS
// names, always including what in-cluster and loopback clients dial.
func servingSANs(bind string, extra []string) ([]string, []net.IP) {
	dns := []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc.cluster.local", "localhost"}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(ServiceIP)}
	seenIP := map[string]bool{}
	for _, ip := range ips {
		seenIP[ip.String()] = true
	}
	seenDNS := map[string]bool{}
	for _, d := range dns {
		seenDNS[d] = true
	}
	for _, s := range append([]string{bind}, extra...) {
		if s == "" {
			continue
		}
		if ip := net.ParseIP(s); ip != nil {
			if ip.IsUnspecified() || seenIP[ip.String()] {
				continue
			}
			seenIP[ip.String()] = true
			ips = append(ips, ip)
		} else if !seenDNS[s] {
			seenDNS[s] = true
			dns = append(dns, s)
		}
	}
	return dns, ips
}
