package k3s_test

import (
	"context"
	"testing"
	"time"

	"github.com/homelab/rack/internal/testlab"
	"github.com/homelab/rack/nodes/k3s"
)

// BenchmarkRebuildVsUp measures the worst day against the first: the
// all-servers-lost rebuild of a 3-server test rack (restore the first
// server from an etcd snapshot, the other two rejoin) against a fresh
// `rack up --nodes-only` of the same rack, in the same run (goal: at most 2).
func BenchmarkRebuildVsUp(b *testing.B) {
	lab := testlab.New(b, testlab.Spec{Cluster: "benchdr", Nodes: []testlab.Node{
		{Name: "etcd-1", Role: "server"}, {Name: "etcd-2", Role: "server"}, {Name: "etcd-3", Role: "server"},
	}})
	names := []string{"etcd-1", "etcd-2", "etcd-3"}
	wipe := func() {
		for _, n := range names {
			if out, err := lab.Host(n).Exec(context.Background(), `systemctl stop k3s 2>/dev/null; systemctl disable k3s 2>/dev/null
rm -rf /var/lib/rancher/k3s /etc/rancher/k3s /etc/rancher/node /usr/local/bin/k3s /etc/systemd/system/k3s.service /etc/systemd/system/k3s.service.env
systemctl daemon-reload; true`); err != nil {
				b.Fatalf("wiping %s: %v %s", n, err, out)
			}
		}
	}
	b.ResetTimer()
	var tUp, tRebuild time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		wipe()
		b.StartTimer()
		d, _, _ := benchUp(b, lab)
		tUp += d

		b.StopTimer()
		inv, o := benchOptions(b, lab)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		bp, err := k3s.PlanBackup(ctx, inv, o, k3s.BackupOptions{Keep: 1})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bp.Run(ctx); err != nil {
			b.Fatal(err)
		}
		wipe()
		b.StartTimer()
		stop := kickKwokOnRestore(b, lab)
		start := time.Now()
		p, err := k3s.PlanRebuild(ctx, inv, o, k3s.RebuildOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if p.Mode != k3s.RebuildRestore {
			b.Fatalf("rebuild mode %s (%v)", p.Mode, p.Refusals)
		}
		if _, err := p.Run(ctx, o); err != nil {
			b.Fatal(err)
		}
		tRebuild += time.Since(start)
		stop()
		cancel()
		b.Logf("round %d: rack up %s, rebuild from a snapshot %s", i, d, time.Since(start))
	}
	b.ReportMetric(tRebuild.Seconds()/tUp.Seconds(), "rebuild_vs_up")
}
