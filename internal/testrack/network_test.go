package testrack

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/homelab/rack/internal/testnet"
)

// TestHostRoutesClusterNetworksToBlackhole: inside a test host, the cluster's
// pod and service networks end on a blackhole route, so nothing a test runs
// there can send a packet for them off the machine.
func TestHostRoutesClusterNetworksToBlackhole(t *testing.T) {
	t.Parallel()
	r := New(t, 1)
	h := r.Hosts[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testnet.Check(ctx, h.Name); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"10.43.0.1/443", "10.42.7.7/8080"} {
		start := time.Now()
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", h.Name, "bash", "-c", "exec 3<>/dev/tcp/"+addr).CombinedOutput()
		if err == nil {
			t.Fatalf("%s: connected from inside %s", addr, h.Name)
		}
		if took := time.Since(start); took > 2*time.Second || !strings.Contains(string(out), "Invalid argument") {
			t.Fatalf("%s from inside %s: took %v, said %q: not refused by the blackhole route", addr, h.Name, took, out)
		}
	}
}
