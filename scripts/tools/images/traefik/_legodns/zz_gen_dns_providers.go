// Package dns stands in for lego's registry of DNS-01 providers
// (github.com/go-acme/lego/v4/providers/dns) in the test rack's Traefik
// image: scripts/build-images.sh builds Traefik against a copy of lego whose
// providers/dns holds this file instead of the generated one that imports
// all ~180 providers and their cloud SDKs (35 % of Traefik's source, by
// `go list -deps`). The test rack issues no ACME certificates; a DNS
// challenge configured there fails as an unknown provider does upstream.
package dns

import (
	"fmt"

	"github.com/go-acme/lego/v4/challenge"
)

// NewDNSChallengeProviderByName keeps the signature Traefik calls.
func NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {
	return nil, fmt.Errorf("unrecognized DNS provider: %s (the test rack's Traefik is built without lego's DNS providers: scripts/build-images.sh)", name)
}
