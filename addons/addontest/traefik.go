package addontest

import "context"

// TraefikCRDModule is the Go module whose zip holds the CRDs of the Traefik
// release rack pins (chart 39.0.9 ships Traefik v3.6.x).
const TraefikCRDModule = "github.com/traefik/traefik/v3@v3.6.15"

// traefikCRDs is the file in that module with every traefik.io CRD.
const traefikCRDs = "docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml"

// InstallTraefikCRDs installs Traefik's CRDs (IngressRoute, TraefikService,
// Middleware…) from the module cache, so Traefik objects can be dry-run.
func (s *Server) InstallTraefikCRDs(ctx context.Context) error {
	dir, err := ModuleDir(ctx, TraefikCRDModule)
	if err != nil {
		return err
	}
	files, err := CRDFiles(dir, traefikCRDs)
	if err != nil {
		return err
	}
	return s.InstallCRDs(ctx, files...)
}
