// Command mkimages wraps the binaries scripts/build-images.sh built into the
// test rack's OCI image tars and writes the set's images.json.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/homelab/rack/internal/images"
)

func main() {
	var b images.Binaries
	out := flag.String("out", "", "folder for the image tars and images.json")
	flag.StringVar(&b.Pause, "pause", "", "pause binary")
	flag.StringVar(&b.SampleWeb, "sampleweb", "", "sampleweb binary")
	flag.StringVar(&b.MetalLBController, "metallb-controller", "", "MetalLB controller binary")
	flag.StringVar(&b.MetalLBSpeaker, "metallb-speaker", "", "MetalLB speaker binary")
	flag.StringVar(&b.Traefik, "traefik", "", "traefik binary")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "mkimages: -out is required")
		os.Exit(2)
	}
	s, err := images.WriteSet(*out, images.Catalog(b))
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkimages: %v\n", err)
		os.Exit(1)
	}
	for _, img := range s.Images {
		fmt.Fprintf(os.Stderr, "== image %s %s\n", img.Ref, img.Digest)
	}
}
