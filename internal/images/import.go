package images

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Namespace is the containerd namespace the CRI plugin (and so the
// kubelet) uses.
const Namespace = "k8s.io"

// Import imports every image of the set into the containerd listening on
// socket, in the CRI's namespace, unpacked for its default snapshotter.
// ctr is the client binary ("ctr" from Debian's containerd when empty). It
// must run where the socket is reachable: inside the node's mount namespace
// when containerd's socket is private to it.
func Import(ctx context.Context, ctr, socket string, s Set) error {
	if ctr == "" {
		ctr = "ctr"
	}
	for _, img := range s.Images {
		cmd := exec.CommandContext(ctx, ctr, "--address", socket, "--namespace", Namespace,
			"images", "import", img.Tar)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("importing %s into %s: %v: %s", img.Ref, socket, err, strings.TrimSpace(out.String()))
		}
	}
	return nil
}

// Listed returns the references of the images in containerd's CRI
// namespace, as `ctr images ls -q` prints them.
func Listed(ctx context.Context, ctr, socket string) ([]string, error) {
	if ctr == "" {
		ctr = "ctr"
	}
	out, err := exec.CommandContext(ctx, ctr, "--address", socket, "--namespace", Namespace, "images", "ls", "-q").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ctr images ls: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return strings.Fields(string(out)), nil
}
