package images

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// The references the pinned charts use (../shared/charts): metallb-0.16.2's
// controller.image and speaker.image default to quay.io/metallb/<name> with
// the chart's appVersion; traefik-39.0.9's image is docker.io + "traefik" +
// appVersion, which the CRI normalises to docker.io/library/traefik.
const (
	PauseRef = "registry.k8s.io/pause:3.6" // containerd 1.6's default sandbox image
	// MetalLBChartVersion is the tag the metallb-0.16.2 chart references;
	// MetalLBVersion is the MetalLB actually built: v0.16.2 cannot be built
	// here (see scripts/tools/images/metallb/go.mod), v0.16.1 can. Its
	// images are imported under both tags, labelled with what they hold.
	MetalLBChartVersion  = "v0.16.2"
	MetalLBVersion       = "v0.16.1"
	MetalLBControllerRef = "quay.io/metallb/controller:" + MetalLBChartVersion
	MetalLBSpeakerRef    = "quay.io/metallb/speaker:" + MetalLBChartVersion
	TraefikVersion       = "v3.6.15"
	TraefikRef           = "docker.io/library/traefik:" + TraefikVersion
	// SampleWebRepo is rack's own sample web server; each tag of SampleWebTags
	// is the same binary answering with that tag as its version.
	SampleWebRepo = "docker.io/homelab/sampleweb"
)

// SampleWebTags are the versions of the sample server every image set has:
// enough for a rollout from one to the next and back.
var SampleWebTags = []string{"v1", "v2", "v3"}

// SampleWebRef is the reference of the sample server answering as version.
func SampleWebRef(version string) string { return SampleWebRepo + ":" + version }

// Binaries are the inputs of the image set, as scripts/build-images.sh
// builds them.
type Binaries struct {
	Pause, SampleWeb                  string
	MetalLBController, MetalLBSpeaker string
	Traefik                           string
}

// Catalog describes the images whose binaries are given, entrypoints as
// upstream's Dockerfiles have them (metallb: ENTRYPOINT ["/controller"] and
// ["/speaker"]; traefik: ENTRYPOINT ["/traefik"]), so the charts' args apply
// unchanged.
func Catalog(b Binaries) []Image {
	var imgs []Image
	add := func(bin string, img Image) {
		if bin != "" {
			imgs = append(imgs, img)
		}
	}
	add(b.Pause, Image{Ref: PauseRef, Entrypoint: []string{"/pause"}, Files: []File{{Path: "/pause", Source: b.Pause}}})
	for _, tag := range SampleWebTags {
		add(b.SampleWeb, Image{
			Ref: SampleWebRef(tag), Entrypoint: []string{"/sampleweb"},
			Env:          []string{"SAMPLEWEB_VERSION=" + tag},
			ExposedPorts: []string{"8080/tcp"},
			Files:        []File{{Path: "/sampleweb", Source: b.SampleWeb}},
		})
	}
	builtFrom := map[string]string{"rack.homelab/built-from": "go.universe.tf/metallb@" + MetalLBVersion}
	for _, tag := range []string{MetalLBVersion, MetalLBChartVersion} {
		add(b.MetalLBController, Image{Ref: "quay.io/metallb/controller:" + tag, Entrypoint: []string{"/controller"},
			Labels: builtFrom, Files: []File{{Path: "/controller", Source: b.MetalLBController}}})
		add(b.MetalLBSpeaker, Image{Ref: "quay.io/metallb/speaker:" + tag, Entrypoint: []string{"/speaker"},
			Labels: builtFrom, Files: []File{{Path: "/speaker", Source: b.MetalLBSpeaker}}})
	}
	add(b.Traefik, Image{Ref: TraefikRef, Entrypoint: []string{"/traefik"}, ExposedPorts: []string{"80/tcp"},
		Files: []File{{Path: "/traefik", Source: b.Traefik}}})
	return imgs
}

// Built is one image of a built set.
type Built struct {
	Ref string `json:"ref"`
	// Tar is the OCI layout tar's path.
	Tar string `json:"tar"`
	// Digest is the manifest digest containerd will report.
	Digest string `json:"digest"`
}

// Set is a built set of images, described by Dir/images.json.
type Set struct {
	Dir    string
	Images []Built
}

const indexFile = "images.json"

// WriteSet builds every image into dir (one tar per image) and writes the
// index last, so a set with an index is complete.
func WriteSet(dir string, imgs []Image) (Set, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Set{}, err
	}
	s := Set{Dir: dir}
	for i, img := range imgs {
		tar := filepath.Join(dir, fmt.Sprintf("%02d-%s.oci.tar", i, fileName(img.Ref)))
		if err := img.WriteOCI(tar); err != nil {
			return Set{}, fmt.Errorf("%s: %w", img.Ref, err)
		}
		d, err := ManifestDigest(tar)
		if err != nil {
			return Set{}, err
		}
		s.Images = append(s.Images, Built{Ref: img.Ref, Tar: tar, Digest: d})
	}
	b, err := json.MarshalIndent(s.Images, "", "  ")
	if err != nil {
		return Set{}, err
	}
	tmp := filepath.Join(dir, indexFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return Set{}, err
	}
	return s, os.Rename(tmp, filepath.Join(dir, indexFile))
}

// ReadSet loads a set written by WriteSet.
func ReadSet(dir string) (Set, error) {
	b, err := os.ReadFile(filepath.Join(dir, indexFile))
	if err != nil {
		return Set{}, err
	}
	s := Set{Dir: dir}
	if err := json.Unmarshal(b, &s.Images); err != nil {
		return Set{}, fmt.Errorf("%s: %w", filepath.Join(dir, indexFile), err)
	}
	for _, img := range s.Images {
		if _, err := os.Stat(img.Tar); err != nil {
			return Set{}, fmt.Errorf("image set %s is incomplete: %w", dir, err)
		}
	}
	return s, nil
}

// Image returns the built image with that reference.
func (s Set) Image(ref string) (Built, bool) {
	for _, b := range s.Images {
		if b.Ref == ref {
			return b, true
		}
	}
	return Built{}, false
}

// Only returns a set with just the images whose references are given, for
// nodes that need a few (importing Traefik costs a second or two).
func (s Set) Only(refs ...string) (Set, error) {
	out := Set{Dir: s.Dir}
	for _, r := range refs {
		b, ok := s.Image(r)
		if !ok {
			return Set{}, fmt.Errorf("image %s is not in the set at %s", r, s.Dir)
		}
		out.Images = append(out.Images, b)
	}
	return out, nil
}

func fileName(ref string) string {
	out := []rune(ref)
	for i, r := range out {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-') {
			out[i] = '_'
		}
	}
	return string(out)
}
