package testnet

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/homelab/rack/internal/testenv"
)

func TestHoldRoutesBothNetworksToBlackhole(t *testing.T) {
	testenv.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	release, err := Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.42.255.254:443", "10.43.255.254:443"}; strings.Join(ProbeAddrs, " ") != strings.Join(want, " ") {
		t.Fatalf("ProbeAddrs = %v, want %v", ProbeAddrs, want)
	}
	for _, addr := range ProbeAddrs {
		if err := DialFailsLocally(addr); err != nil {
			t.Error(err)
		}
	}
	// A second holder in the same process keeps the routes after the first
	// lets go: concurrent test clusters share them.
	release2, err := Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if err := Check(ctx, ""); err != nil {
		t.Fatalf("after one of two holders let go: %v", err)
	}
	if err := release2(); err != nil {
		t.Fatal(err)
	}
}

func TestDeadHolderIsSwept(t *testing.T) {
	testenv.RequireRoot(t)
	if holderAlive("1-1-abc") {
		t.Error("pid 1 with start time 1 taken for alive")
	}
	if holderAlive("garbage") {
		t.Error("a malformed name taken for alive")
	}
}
