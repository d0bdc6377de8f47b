package testcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/version"
)

// The test rack's kine must answer etcd's Status call as k3s' does: the API
// server asks it whether watch progress requests work, and without them
// every client's streaming list fails (kwok then saw pod changes only at its
// relists, tens of seconds late). kine's Status reads SQLite's dbstat table,
// which exists only when SQLite is compiled with it, as kine's and k3s'
// builds do.
func TestKineAnswersStatusLikeK3s(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := binaries(t, ctx)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	kine := exec.CommandContext(ctx, b.Kine, "--listen-address", addr,
		"--endpoint", "sqlite://"+filepath.Join(dir, "state.db")+"?_journal=WAL&cache=shared")
	kine.Dir = dir
	if err := kine.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = kine.Process.Kill(); _ = kine.Wait() }()

	var out []byte
	for {
		cmd := exec.CommandContext(ctx, b.Etcdctl, "--endpoints", "http://"+addr, "endpoint", "status", "-w", "json")
		if out, err = cmd.CombinedOutput(); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("kine's etcd Status: %v: %s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var st []struct {
		Status struct {
			Version string `json:"version"`
			DBSize  int64  `json:"dbSize"`
		}
	}
	if err := json.Unmarshal(out, &st); err != nil || len(st) != 1 {
		t.Fatalf("etcdctl endpoint status: %v: %s", err, out)
	}
	// The API server's rule (k8s.io/apiserver storage/feature): progress
	// requests need etcd 3.4.31+ or 3.5.13+.
	v, err := version.ParseSemantic(st[0].Status.Version)
	if err != nil || v.LessThan(version.MustParseSemantic("3.5.13")) || st[0].Status.DBSize <= 0 {
		t.Fatalf("kine reports etcd %q, db size %d: %v; want 3.5.13 or newer and a size", st[0].Status.Version, st[0].Status.DBSize, fmt.Sprint(err))
	}
}
