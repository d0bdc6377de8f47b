package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/homelab/rack/internal/flock"
	"github.com/homelab/rack/internal/srcroot"
)

// EnvImagesDir names a built image set (a folder with images.json) to use
// instead of running scripts/build-images.sh.
const EnvImagesDir = "RACK_IMAGES_DIR"

// ErrUnavailable marks a machine where the images cannot be had (no source
// tree, the build script missing), which tests turn into a skip.
var ErrUnavailable = errors.New("images: image set unavailable")

// Find returns the image set: $RACK_IMAGES_DIR when set, else what
// scripts/build-images.sh prints on its last line. The script builds on the
// first call (MetalLB and Traefik from their Go modules: minutes) and
// answers from its cache afterwards. Progress lines go to logf.
func Find(ctx context.Context, logf func(string, ...any)) (Set, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if dir := os.Getenv(EnvImagesDir); dir != "" {
		return ReadSet(dir)
	}
	root, err := repoRoot()
	if err != nil {
		return Set{}, fmt.Errorf("%w: %v, and %s is not set", ErrUnavailable, err, EnvImagesDir)
	}
	dir, err := runBuild(ctx, root, logf)
	if err != nil {
		return Set{}, err
	}
	return ReadSet(dir)
}

// runBuild runs the script under a machine-wide lock: test packages run
// concurrently, and two cold builds at once would only halve each other's
// speed.
func runBuild(ctx context.Context, root string, logf func(string, ...any)) (string, error) {
	cache := os.Getenv("CACHE_DIR")
	if cache == "" {
		cache = filepath.Join(root, ".cache")
	}
	if err := os.MkdirAll(filepath.Join(cache, "images"), 0o755); err != nil {
		return "", err
	}
	l, err := flock.Acquire(ctx, filepath.Join(cache, "images", "build.lock"))
	if err != nil {
		return "", err
	}
	defer l.Unlock()
	if _, err := os.Stat(filepath.Join(root, "scripts", "build-images.sh")); err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return srcroot.RunScript(ctx, root, "scripts/build-images.sh", nil, logf, "images")
}

// repoRoot is rack's source tree, which must hold scripts/build-images.sh.
func repoRoot() (string, error) {
	root, err := srcroot.Find()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(root, "scripts", "build-images.sh")); err != nil {
		return "", fmt.Errorf("rack's source tree %s: %w", root, err)
	}
	return root, nil
}
