package nodes

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/homelab/rack/internal/testrack"
)

// benchCipher is the cipher both rack and scp use in the benchmarks (rack's
// default first choice), so the comparison is about the transfer, not the
// crypto.
const benchCipher = ssh.CipherAES128GCM

// benchRounds: each side runs this many times per benchmark iteration and
// the best time counts, which damps the noise of a shared 2-core VM
// (single runs vary by ±30% here).
const benchRounds = 7

// fanoutRounds is smaller than benchRounds: one round moves 850 MiB.
const fanoutRounds = 3

// cpuStat is the machine-wide CPU time from /proc/stat, in clock ticks.
type cpuStat struct{ busy, total uint64 }

func readCPUStat() cpuStat {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuStat{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var st cpuStat
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseUint(f, 10, 64)
		st.total += v
		if i != 3 && i != 4 { // idle, iowait
			st.busy += v
		}
	}
	return st
}

func (s cpuStat) busySince(before cpuStat) float64 {
	if s.total <= before.total {
		return 0
	}
	return float64(s.busy-before.busy) / float64(s.total-before.total)
}

func millis(ds []time.Duration) []int64 {
	out := make([]int64, len(ds))
	for i, d := range ds {
		out[i] = d.Milliseconds()
	}
	return out
}

func benchOptions() Options {
	o, _, _ := testOptions(env{})
	o.Ciphers = []string{benchCipher}
	return o
}

// BenchmarkUploadVsSCP uploads 100 MiB to one test host with rack (connect,
// upload with remote sha256 check and atomic rename, close) and with
// OpenSSH's scp to the same sshd, side by side. upload_vs_scp is
// scp_time / rack_time: above 1 rack is faster.
func BenchmarkUploadVsSCP(b *testing.B) {
	scp, err := exec.LookPath("scp")
	if err != nil {
		b.Skip("scp not installed (apt-get install openssh-client)")
	}
	r := testrack.New(b, 1)
	host := r.Hosts[0]
	const size = 100 << 20
	local, sum := randomFile(b, size)
	tg := Target{Name: host.Name, Address: host.Addr, Port: host.Port, User: testrack.RootUser,
		IdentityFiles: []string{r.ClientKey}, KnownHosts: r.KnownHosts, HostKeyPolicy: PolicyStrict}
	ctx := context.Background()
	const rackDst, scpDst = "/var/lib/rancher/rack.bin", "/var/lib/rancher/scp.bin"

	runSCP := func() time.Duration {
		start := time.Now()
		cmd := exec.Command(scp, "-q", "-F", "/dev/null", "-i", r.ClientKey,
			"-o", "Ciphers="+benchCipher, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
			"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile="+r.KnownHosts,
			local, fmt.Sprintf("root@%s:%s", host.Addr, scpDst))
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("scp: %v: %s", err, out)
		}
		return time.Since(start)
	}
	runRack := func() time.Duration {
		start := time.Now()
		h, err := Connect(ctx, tg, benchOptions())
		if err != nil {
			b.Fatal(err)
		}
		tr, err := h.UploadFile(ctx, local, rackDst, FileOptions{})
		h.Close()
		if err != nil || tr.Sent != size {
			b.Fatalf("rack upload: %+v %v", tr, err)
		}
		return time.Since(start)
	}
	var rackTimes, scpTimes []time.Duration
	b.ResetTimer()
	for range b.N {
		for round := range benchRounds {
			host.Exec(ctx, "rm -f "+rackDst+" "+scpDst)
			// Alternate who goes first, so neither always meets a warmer machine.
			if round%2 == 0 {
				scpTimes = append(scpTimes, runSCP())
				rackTimes = append(rackTimes, runRack())
			} else {
				rackTimes = append(rackTimes, runRack())
				scpTimes = append(scpTimes, runSCP())
			}
		}
	}
	b.StopTimer()
	if got := remoteSum(b, host, scpDst); got != sum {
		b.Fatalf("scp copy has sha256 %s, want %s", got, sum)
	}
	b.Logf("each round (ms): rack %v, scp %v", millis(rackTimes), millis(scpTimes))
	rackBest, scpBest := slices.Min(rackTimes), slices.Min(scpTimes)
	b.ReportMetric(float64(size)/(1<<20)/rackBest.Seconds(), "rack_MiB/s")
	b.ReportMetric(float64(size)/(1<<20)/scpBest.Seconds(), "scp_MiB/s")
	b.ReportMetric(scpBest.Seconds()/rackBest.Seconds(), "upload_vs_scp")
}

// BenchmarkFanOut runs the same step (a 50 MiB upload and a command) on 16
// hosts and on 1. fanout_16_vs_1 is t16 / t1: 1 would be perfect scaling.
// On this machine it is bound by its two cores (client, 16 sshds and
// sftp-servers share them), not by rack; see BenchmarkFanOutShaped.
func BenchmarkFanOut(b *testing.B) {
	t1, t16, busy16 := fanOut(b, false)
	b.ReportMetric(t1.Seconds(), "t1_s")
	b.ReportMetric(t16.Seconds(), "t16_s")
	// How busy the machine's CPUs were during the 16-host runs: near 100%
	// means the fan-out is bound by this machine's cores, not by waiting.
	b.ReportMetric(100*busy16, "t16_cpu_busy_%")
	b.ReportMetric(t16.Seconds()/t1.Seconds(), "fanout_16_vs_1")
}

// BenchmarkFanOutShaped is BenchmarkFanOut on links shaped the way a rack
// is wired: each node's port at 100 Mbit/s (a Pi 3's, a cheap switch's),
// the operator's at 1 Gbit/s behind a queue fair between flows, as Linux's
// default one is (see testrack's ShapeBridge). 16 × 50 MiB through
// 1 Gbit/s against 50 MiB through 100 Mbit/s puts the physical floor of
// fanout_16_vs_1_shaped at 1.6 with direct uploads.
func BenchmarkFanOutShaped(b *testing.B) {
	t1, t16, _ := fanOut(b, true)
	b.ReportMetric(t1.Seconds(), "t1_shaped_s")
	b.ReportMetric(t16.Seconds(), "t16_shaped_s")
	b.ReportMetric(t16.Seconds()/t1.Seconds(), "fanout_16_vs_1_shaped")
}

// fanOut returns the best times of a 1-host and a 16-host fan-out, and how
// busy the CPUs were during the busiest 16-host run.
func fanOut(b *testing.B, shaped bool) (best1, best16 time.Duration, busy float64) {
	r := testrack.New(b, 16)
	ctx := context.Background()
	if shaped {
		for _, h := range r.Hosts {
			if err := h.ShapeLink(ctx, "100mbit"); err != nil {
				b.Fatal(err)
			}
		}
		if err := r.ShapeBridge(ctx, 1000); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = r.ShapeBridge(context.Background(), 0) })
	}
	const size = 50 << 20
	local, _ := randomFile(b, size)
	src, err := OpenSource(local) // hashed once, shared by every node
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	var targets []Target
	for _, h := range r.Hosts {
		targets = append(targets, Target{Name: h.Name, Address: h.Addr, Port: h.Port, User: testrack.SudoUser,
			IdentityFiles: []string{r.ClientKey}, KnownHosts: r.KnownHosts, HostKeyPolicy: PolicyStrict})
	}
	const dst = "/usr/local/bin/k3s"
	step := func(ctx context.Context, h *Host) error {
		if _, err := h.Upload(ctx, src, dst, FileOptions{Privileged: true, Mode: 0o755}); err != nil {
			return err
		}
		return h.Run(ctx, Sh(`test -x "$1"`, dst), RunOptions{Privileged: true})
	}
	run := func(ts []Target) time.Duration {
		for _, h := range r.Hosts {
			h.Exec(ctx, "rm -f "+dst)
		}
		start := time.Now()
		results := FanOut(ctx, ts, FanOutOptions{Concurrency: 16, Connect: benchOptions()}, step)
		d := time.Since(start)
		if err := Errors(results); err != nil {
			b.Fatal(err)
		}
		return d
	}
	var t1, t16 []time.Duration
	var busy16 []float64
	b.ResetTimer()
	for range b.N {
		for range fanoutRounds {
			t1 = append(t1, run(targets[:1]))
			before := readCPUStat()
			t16 = append(t16, run(targets))
			busy16 = append(busy16, readCPUStat().busySince(before))
		}
	}
	b.StopTimer()
	b.Logf("shaped=%v, each round (ms): 1 host %v, 16 hosts %v", shaped, millis(t1), millis(t16))
	return slices.Min(t1), slices.Min(t16), slices.Max(busy16)
}
