package k3s

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/homelab/rack/internal/atomicfile"
	"github.com/homelab/rack/inventory"
)

// DefaultReleaseURL is where k3s publishes its release assets.
const DefaultReleaseURL = "https://github.com/k3s-io/k3s/releases/download"

// Binaries finds the k3s binary (and airgap images) for a version and arch:
// first in the inventory's airgap folder, then in the local cache, and only
// then from the k3s release, verified against the release's checksum file.
type Binaries struct {
	// CacheDir is ~/.cache/rack/k3s by default.
	CacheDir string
	// Airgap is the inventory's cluster.k3s.airgap folder, resolved; "" for none.
	Airgap string
	// ReleaseURL is the base of release downloads (DefaultReleaseURL).
	ReleaseURL string
	// Client downloads; nil means http.DefaultClient.
	Client *http.Client
}

// Artifact is a verified local file.
type Artifact struct {
	Path   string
	SHA256 string
	Size   int64
}

// DefaultCacheDir is ~/.cache/rack/k3s (XDG_CACHE_HOME honoured).
func DefaultCacheDir() (string, error) {
	return inventory.UserCache("k3s", "k3s binaries")
}

// assetName is the release asset of the k3s binary for an arch.
func assetName(arch string) (string, error) {
	switch arch {
	case "amd64":
		return "k3s", nil
	case "arm64":
		return "k3s-arm64", nil
	case "arm":
		return "k3s-armhf", nil
	}
	return "", fmt.Errorf("k3s publishes no binary for arch %q (amd64, arm64, arm)", arch)
}

// Binary returns the verified k3s binary for version and arch, downloading
// it into the cache when it is not there.
func (b Binaries) Binary(ctx context.Context, version, arch string) (Artifact, error) {
	asset, err := assetName(arch)
	if err != nil {
		return Artifact{}, err
	}
	if b.Airgap != "" {
		return b.airgapBinary(asset, arch)
	}
	dir := filepath.Join(b.CacheDir, version, arch)
	if a, err := verifyCached(filepath.Join(dir, "k3s")); err == nil {
		return a, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return Artifact{}, err
	}
	return b.download(ctx, version, arch, asset, dir)
}

// Checksum is the sha256 the binary for version and arch has, for planning:
// it reads the airgap folder or the cache, or else only the release's small
// checksum file. It never downloads the binary and never writes anything.
func (b Binaries) Checksum(ctx context.Context, version, arch string) (sum string, cached bool, err error) {
	asset, err := assetName(arch)
	if err != nil {
		return "", false, err
	}
	if b.Airgap != "" {
		a, err := b.airgapBinary(asset, arch)
		return a.SHA256, true, err
	}
	if a, err := verifyCached(filepath.Join(b.CacheDir, version, arch, "k3s")); err == nil {
		return a.SHA256, true, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", false, err
	}
	sum, err = b.releaseSum(ctx, version, arch, asset)
	return sum, false, err
}

// AirgapImages lists the image tarballs for arch in the airgap folder.
func (b Binaries) AirgapImages(arch string) ([]string, error) {
	if b.Airgap == "" {
		return nil, nil
	}
	var out []string
	for _, dir := range []string{b.Airgap, filepath.Join(b.Airgap, arch)} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			name := e.Name()
			isTar := strings.HasSuffix(name, ".tar") || strings.HasSuffix(name, ".tar.gz") || strings.HasSuffix(name, ".tar.zst")
			if e.Type().IsRegular() && isTar && (dir != b.Airgap || strings.Contains(name, "-"+arch+".")) {
				out = append(out, filepath.Join(dir, name))
			}
		}
	}
	return out, nil
}

// airgapBinary finds the binary in the airgap folder (upstream's file names,
// flat or in one folder per arch) and checks it against the release's
// checksum file beside it, which must be there: an unverifiable binary is
// never installed.
func (b Binaries) airgapBinary(asset, arch string) (Artifact, error) {
	var bin string
	for _, p := range []string{filepath.Join(b.Airgap, asset), filepath.Join(b.Airgap, arch, "k3s")} {
		if _, err := os.Stat(p); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		return Artifact{}, fmt.Errorf("airgap folder %s has no k3s binary for %s: put the release asset %s there (or %s/k3s)", b.Airgap, arch, asset, arch)
	}
	sumsName := "sha256sum-" + arch + ".txt"
	var sums string
	for _, p := range []string{filepath.Join(filepath.Dir(bin), sumsName), filepath.Join(b.Airgap, sumsName)} {
		if _, err := os.Stat(p); err == nil {
			sums = p
			break
		}
	}
	if sums == "" {
		return Artifact{}, fmt.Errorf("airgap folder %s has %s but not the release's %s, so rack cannot verify it: download %s from the same k3s release and put it beside the binary", b.Airgap, bin, sumsName, sumsName)
	}
	f, err := os.Open(sums)
	if err != nil {
		return Artifact{}, err
	}
	want, found, err := findSum(f, asset)
	f.Close()
	if err != nil || !found {
		return Artifact{}, fmt.Errorf("%s lists no %s: is it the checksum file of the same release as %s?", sums, asset, bin)
	}
	a, err := hashFile(bin)
	if err != nil {
		return Artifact{}, err
	}
	if want != a.SHA256 {
		return Artifact{}, fmt.Errorf("%s: sha256 %s does not match %s (%s): the file is damaged or not that release", bin, a.SHA256, want, sums)
	}
	return a, nil
}

// verifyCached checks a cached binary against the checksum recorded beside it
// when it was downloaded, so a damaged cache is never uploaded to a node.
func verifyCached(path string) (Artifact, error) {
	want, err := os.ReadFile(path + ".sha256")
	if err != nil {
		return Artifact{}, err
	}
	a, err := hashFile(path)
	if err != nil {
		return Artifact{}, err
	}
	if strings.TrimSpace(string(want)) != a.SHA256 {
		return Artifact{}, fmt.Errorf("cached k3s binary %s is damaged (sha256 %s, recorded %s): delete the folder and run again", path, a.SHA256, strings.TrimSpace(string(want)))
	}
	return a, nil
}

func (b Binaries) releaseURL(version string) (string, *http.Client) {
	base := b.ReleaseURL
	if base == "" {
		base = DefaultReleaseURL
	}
	client := b.Client
	if client == nil {
		client = http.DefaultClient
	}
	return base + "/" + url.PathEscape(version) + "/", client
}

// releaseSum reads the binary's sha256 from the release's checksum file.
func (b Binaries) releaseSum(ctx context.Context, version, arch, asset string) (string, error) {
	release, client := b.releaseURL(version)
	sumsBody, err := fetch(ctx, client, release+"sha256sum-"+arch+".txt")
	if err != nil {
		return "", fmt.Errorf("k3s %s for %s is not cached in %s and its checksums could not be downloaded: %w (offline? set cluster.k3s.airgap to a folder holding %s and sha256sum-%s.txt)",
			version, arch, filepath.Join(b.CacheDir, version, arch), err, asset, arch)
	}
	defer sumsBody.Close()
	want, found, err := findSum(sumsBody, asset)
	if err != nil || !found {
		return "", fmt.Errorf("the checksum file of k3s %s lists no %s: is %s a k3s release?", version, asset, version)
	}
	return want, nil
}

func (b Binaries) download(ctx context.Context, version, arch, asset, dir string) (Artifact, error) {
	want, err := b.releaseSum(ctx, version, arch, asset)
	if err != nil {
		return Artifact{}, err
	}
	release, client := b.releaseURL(version)
	body, err := fetch(ctx, client, release+asset)
	if err != nil {
		return Artifact{}, fmt.Errorf("download k3s %s (%s): %w", version, asset, err)
	}
	defer body.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Artifact{}, err
	}
	tmp, err := os.CreateTemp(dir, ".k3s-download-*")
	if err != nil {
		return Artifact{}, err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Artifact{}, fmt.Errorf("download k3s %s (%s): %w", version, asset, err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if got != want {
		return Artifact{}, fmt.Errorf("downloaded k3s %s (%s) has sha256 %s but the release says %s: refusing it", version, asset, got, want)
	}
	if err := os.Chmod(tmp.Name(), 0o755); err != nil {
		return Artifact{}, err
	}
	final := filepath.Join(dir, "k3s")
	if err := atomicfile.Write(final+".sha256", []byte(got+"\n"), 0o644); err != nil {
		return Artifact{}, err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return Artifact{}, err
	}
	return Artifact{Path: final, SHA256: got, Size: n}, nil
}

func fetch(ctx context.Context, client *http.Client, u string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return resp.Body, nil
}

// findSum reads a sha256sum file ("<hex>  <name>") for name.
func findSum(r io.Reader, name string) (string, bool, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 2 && strings.TrimPrefix(fields[1], "*") == name {
			return strings.ToLower(fields[0]), true, nil
		}
	}
	return "", false, sc.Err()
}

func hashFile(path string) (Artifact, error) {
	f, err := os.Open(path)
	if err != nil {
		return Artifact{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return Artifact{}, err
	}
	return Artifact{Path: path, SHA256: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}
