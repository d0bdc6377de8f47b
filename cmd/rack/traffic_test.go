package main

// Traffic tests: every release strategy proven by sending requests through
// Traefik from the operator's side, on the real-pods test rack (issue 9):
// nodes whose kubelets run real pods, MetalLB and rack's Traefik as real
// pods, the project's sample web server (internal/sampleweb, images
// docker.io/homelab/sampleweb:v1|v2|v3 from scripts/build-images.sh) as the
// app. Each load loop is bounded (a request count or a deadline): it stops
// by itself.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/apps/release"
	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/internal/testlab"
	"github.com/homelab/rack/internal/testrack"
	"github.com/homelab/rack/stacks"
)

// trafficRack is the real-pods test rack, brought up by rack itself with
// addons.traefik and addons.metallb on, ready for apps.
type trafficRack struct {
	// Inventory is the rack's inventory file; setApps replaces its apps.
	Inventory string
	// Env is the environment rack runs with (chart mirror, kubeconfig…).
	Env map[string]string
	// Traefik is Traefik's LoadBalancer address, host:port, as the
	// operator's machine reaches it.
	Traefik string
	// HTTP reaches Traefik and the LoadBalancer addresses from the
	// operator's side.
	HTTP *http.Client
	Kube kubernetes.Interface
}

// trafficRacks is how many real-pods racks the traffic tests share. Bringing
// one up (three real nodes, MetalLB, Traefik) costs minutes, an app on it
// seconds; a test holds a rack for its whole run (it owns the rack's apps),
// so two let two tests run side by side (-parallel), which halves the
// traffic tests' wall time. A third did not shorten a cold make test (run
// 10: 23 minutes with three racks, as with two: the machine's two cores were
// the limit) and put a dozen real nodes up at once.
const trafficRacks = 2

// racks are the real-pods racks the traffic tests and benchmarks share.
// slots holds one entry per rack that may exist: a free rack, or nil for one
// not yet brought up. Each test removes its apps when it ends; TestMain
// stops the racks.
var racks = struct {
	slots chan *trafficRack
	mu    sync.Mutex
	labs  []*testlab.Lab
	err   error // the first rack that failed to come up: later tests fail at once
}{slots: func() chan *trafficRack {
	c := make(chan *trafficRack, trafficRacks)
	for range trafficRacks {
		c <- nil
	}
	return c
}()}

// realPodsRack holds a real-pods rack for the test: a free one, or a new
// one brought up by rack itself, `rack up` with addons.metallb (a pool of
// spare addresses on the test network) and addons.traefik, charts from
// ../shared/charts. The test may run in parallel with others (t.Parallel);
// each gets a rack of its own.
func realPodsRack(t testing.TB) *trafficRack {
	t.Helper()
	if err := testrack.Supported(); err != nil {
		testenv.SkipOrFail(t, "the real-pods test rack: %v", err)
	}
	r := <-racks.slots
	if r == nil {
		var lab *testlab.Lab
		var err error
		racks.mu.Lock()
		err = racks.err
		racks.mu.Unlock()
		if err == nil {
			r, lab, err = startTrafficRack(t)
		}
		racks.mu.Lock()
		if lab != nil {
			racks.labs = append(racks.labs, lab)
		}
		if err != nil && racks.err == nil {
			racks.err = err
		}
		racks.mu.Unlock()
		if err != nil {
			racks.slots <- nil
			t.Fatalf("the real-pods test rack did not come up: %v", err)
		}
	}
	t.Cleanup(func() {
		defer func() { racks.slots <- r }()
		// The next test starts from a rack without apps.
		r.setApps(t, "")
		if _, errOut, code := r.rack(t, "up", "--yes"); code != exitOK {
			t.Errorf("removing the test's apps: exit %d\n%s", code, errOut)
		}
	})
	return r
}

// startTrafficRack brings a real-pods rack up; its lab outlives the test
// that asked for it (TestMain closes it).
func startTrafficRack(t testing.TB) (*trafficRack, *testlab.Lab, error) {
	dir, err := os.MkdirTemp("", "rack-traffic-")
	if err != nil {
		return nil, nil, err
	}
	// The lab outlives this test: its notes go to a file, not to t.
	logFile, err := os.Create(filepath.Join(dir, "lab.log"))
	if err != nil {
		return nil, nil, err
	}
	var logMu sync.Mutex
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(logFile, format+"\n", args...)
	}
	// Bounds the lab's start alone: rack up below has timeouts of its own.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	lab, err := testlab.Start(ctx, testlab.Spec{Cluster: "traffic", Dir: dir, Spare: 2, Logf: logf, Nodes: []testlab.Node{
		{Name: "srv", Role: "server", Real: true},
		{Name: "agent-a", Role: "agent", Real: true},
		{Name: "agent-b", Role: "agent", Real: true},
	}})
	if err != nil {
		if lab != nil {
			_ = lab.Close()
		}
		return nil, nil, fmt.Errorf("starting the lab (notes in %s): %w", logFile.Name(), err)
	}
	fail := func(err error) (*trafficRack, *testlab.Lab, error) {
		_ = lab.Close()
		return nil, nil, err
	}
	pool := lab.SparePool()
	if err := lab.WriteInventory(fmt.Sprintf("addons:\n  metallb:\n    pools:\n      - {name: lan, addresses: [%s]}\n  traefik: {}\napps:\n", pool)); err != nil {
		return fail(err)
	}
	pathDir, home, err := pulumiEnv(t, dir)
	if err != nil {
		return fail(err)
	}
	charts := addontest.ChartsDir(t)
	env := lab.Env()
	env["PATH"] = pathDir + string(os.PathListSeparator) + os.Getenv("PATH")
	env["PULUMI_HOME"] = home
	env[stacks.EnvChartMirror] = charts
	env[stacks.EnvPassphrase] = ""
	r := &trafficRack{Inventory: lab.Inventory, Env: env, Kube: lab.Clientset(),
		HTTP: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	began := time.Now()
	out, errOut, code := r.rack(t, "up", "--yes")
	if code != exitOK {
		return fail(fmt.Errorf("rack up: exit %d\n%s\n%s", code, out, errOut))
	}
	// rack's own notes (a wait for MetalLB's webhook, say) show how a
	// passing run went, on a machine that may be busier than this one.
	t.Logf("the real-pods rack: rack up took %v", time.Since(began).Round(time.Second))
	for line := range strings.Lines(errOut) {
		if strings.HasPrefix(strings.TrimSpace(line), "rack: ") {
			t.Logf("  %s", strings.TrimSpace(line))
		}
	}
	// A context of its own: the lab's may have run out while rack up ran
	// (measured on a loaded machine: the lab took 9 minutes, rack up 2).
	getCtx, cancelGet := context.WithTimeout(context.Background(), time.Minute)
	defer cancelGet()
	svc, err := r.Kube.CoreV1().Services(release.TraefikNamespace).Get(getCtx, release.TraefikService, metav1.GetOptions{})
	if err != nil {
		return fail(fmt.Errorf("reading Traefik's Service after rack up: %w", err))
	}
	if len(svc.Status.LoadBalancer.Ingress) == 0 {
		return fail(fmt.Errorf("Traefik's Service has no LoadBalancer address after rack up"))
	}
	r.Traefik = net.JoinHostPort(svc.Status.LoadBalancer.Ingress[0].IP, "80")
	t.Logf("the real-pods rack: Traefik at %s (MetalLB pool %s)", r.Traefik, pool)
	return r, lab, nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, lab := range racks.labs {
		if err := lab.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "the real-pods test rack: %v\n", err)
		}
		_ = os.RemoveAll(lab.Dir)
	}
	if rackBin.path != "" {
		_ = os.RemoveAll(filepath.Dir(rackBin.path)) // 400 MB per test run otherwise
	}
	os.Exit(code)
}

// Images of the sample server.
const (
	sampleV1 = "docker.io/homelab/sampleweb:v1"
	sampleV2 = "docker.io/homelab/sampleweb:v2"
	// sampleMissing is an image no registry of the test rack has: its pods
	// never start, so the candidate never becomes ready.
	sampleMissing = "docker.io/homelab/sampleweb:does-not-exist"
)

var appsSection = regexp.MustCompile(`(?ms)^apps:\n.*`)

// setApps replaces the inventory's apps with yaml (a list, "  - name: …").
func (r *trafficRack) setApps(t testing.TB, yaml string) {
	t.Helper()
	data, err := os.ReadFile(r.Inventory)
	if err != nil {
		t.Fatal(err)
	}
	text := appsSection.ReplaceAllString(string(data), "")
	text = strings.TrimRight(text, "\n") + "\napps:\n" + yaml
	if err := os.WriteFile(r.Inventory, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rack runs the rack binary against the rack's inventory, with the rack's
// environment: a process of its own, as tests on other racks run beside it.
func (r *trafficRack) rack(t testing.TB, args ...string) (string, string, int) {
	t.Helper()
	var errb strings.Builder
	return rackProcess(t, r.Env, &errb, append([]string{"-i", r.Inventory}, args...)...)
}

func (r *trafficRack) mustRack(t testing.TB, args ...string) string {
	t.Helper()
	start := time.Now()
	out, errOut, code := r.rack(t, args...)
	if code != exitOK {
		t.Fatalf("rack %s: exit %d\n%s\n%s", strings.Join(args, " "), code, out, errOut)
	}
	t.Logf("rack %s (%v):\n%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), out)
	return out
}

// answer is what the sample server says on "/".
type answer struct {
	Version string `json:"version"`
	Host    string `json:"host"`
}

// tally counts answers by version, and failures (transport errors and
// non-2xx answers), safely from many goroutines.
type tally struct {
	mu       sync.Mutex
	versions map[string]int
	failed   int
	firstErr string
	last     map[string]time.Time // when each version last answered
}

func newTally() *tally { return &tally{versions: map[string]int{}, last: map[string]time.Time{}} }

func (c *tally) add(version string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.failed++
		if c.firstErr == "" {
			c.firstErr = err.Error()
		}
		return
	}
	c.versions[version]++
	c.last[version] = time.Now()
}

func (c *tally) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.failed
	for _, v := range c.versions {
		n += v
	}
	return n
}

func (c *tally) share(version string) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.versions {
		n += v
	}
	if n == 0 {
		return 0
	}
	return 100 * float64(c.versions[version]) / float64(n)
}

func (c *tally) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("answers %v, %d failed (first: %s)", c.versions, c.failed, c.firstErr)
}

// get sends one request to host through Traefik.
func (r *trafficRack) get(ctx context.Context, host, path string, header http.Header) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.Traefik+path, nil)
	if err != nil {
		return answer{}, err
	}
	req.Host = host
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := r.HTTP.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return answer{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return answer{}, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		return answer{}, fmt.Errorf("not the sample server's answer: %q", body)
	}
	return a, nil
}

// requests sends n requests to host from 8 workers and tallies them.
func (r *trafficRack) requests(t testing.TB, host string, header http.Header, n int) *tally {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := newTally()
	work := make(chan struct{}, n)
	for range n {
		work <- struct{}{}
	}
	close(work)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				a, err := r.get(ctx, host, "/", header)
				c.add(a.Version, err)
			}
		}()
	}
	wg.Wait()
	return c
}

// background is a load loop from the operator's side, 4 workers, until
// stop (or, at the latest, max: it stops by itself).
type background struct {
	*tally
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func (r *trafficRack) background(host string, max time.Duration) *background {
	ctx, cancel := context.WithTimeout(context.Background(), max)
	b := &background{tally: newTally(), cancel: cancel}
	for range 4 {
		b.done.Add(1)
		go func() {
			defer b.done.Done()
			for ctx.Err() == nil {
				a, err := r.get(ctx, host, "/", nil)
				if ctx.Err() != nil {
					return // the request the stop cut short is not the app's failure
				}
				b.add(a.Version, err)
			}
		}()
	}
	return b
}

func (b *background) stop() *tally {
	b.cancel()
	b.done.Wait()
	return b.tally
}

// served is the sample server's own count of "/" requests, read from the
// candidate through the preview route (X-Rack-Preview), one pod at a time
// until every pod of the candidate was asked.
func (r *trafficRack) servedByCandidate(t testing.TB, host string, pods int) int64 {
	t.Helper()
	ctx := context.Background()
	seen := map[string]int64{}
	h := http.Header{apps.PreviewHeader: {apps.PreviewValue}}
	for i := 0; i < 50*pods && len(seen) < pods; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.Traefik+"/stats", nil)
		req.Host = host
		req.Header = h
		resp, err := r.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Served int64  `json:"served"`
			Host   string `json:"host"`
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		seen[st.Host] = st.Served
	}
	var n int64
	for _, v := range seen {
		n += v
	}
	return n
}

func within(t testing.TB, what string, got, want, points float64) {
	t.Helper()
	if math.Abs(got-want) > points {
		t.Errorf("%s: %.1f%%, want %.0f%% ± %.0f points", what, got, want, points)
	}
}

func webApp(strategy string) string {
	return `  - name: web
    image: IMAGE
    port: 8080
    replicas: 4
    expose: {host: web.home.arpa}
    strategy: {type: ` + strategy + `, check: /ready}
`
}

func withImage(app, image string) string { return strings.Replace(app, "IMAGE", image, 1) }

// TestTrafficRollingZeroFailures: a rolling release under load fails no
// request, and ends on v2 only.
func TestTrafficRollingZeroFailures(t *testing.T) {
	t.Parallel()
	r := realPodsRack(t)
	app := webApp("rolling")
	r.setApps(t, withImage(app, sampleV1))
	r.mustRack(t, "up", "--yes")
	load := r.background("web.home.arpa", 15*time.Minute)
	r.setApps(t, withImage(app, sampleV2))
	r.mustRack(t, "up", "--yes")
	got := load.stop()
	if got.failed != 0 || got.total() < 1000 {
		t.Errorf("across the rolling release: %v (%d requests)", got, got.total())
	}
	if after := r.requests(t, "web.home.arpa", nil, 1000); after.versions["v2"] != 1000 {
		t.Errorf("after the release: %v, want v2 only", after)
	}
}

// blueGreenFlip deploys v2 beside v1 and promotes under load; it returns
// how long clients took to see only v2 after the promote began, and the
// load's tally.
func blueGreenFlip(t testing.TB, r *trafficRack) (time.Duration, *tally) {
	t.Helper()
	app := webApp("blue-green")
	r.setApps(t, withImage(app, sampleV1))
	r.mustRack(t, "up", "--yes")
	r.setApps(t, withImage(app, sampleV2))
	r.mustRack(t, "up", "--yes")
	if before := r.requests(t, "web.home.arpa", nil, 1000); before.versions["v1"] != 1000 {
		t.Errorf("before the promote: %v, want v1 only", before)
	}
	if preview := r.requests(t, "web.home.arpa", http.Header{apps.PreviewHeader: {apps.PreviewValue}}, 100); preview.versions["v2"] != 100 {
		t.Errorf("the preview route: %v, want v2 only", preview)
	}
	load := r.background("web.home.arpa", 10*time.Minute)
	start := time.Now()
	r.mustRack(t, "app", "promote", "web")
	// Clients see only v2 once v1 stops answering; give in-flight v1
	// answers (the old pods' preStop pause) time to drain.
	time.Sleep(time.Duration(apps.TerminationGracePeriodSeconds) * time.Second)
	got := load.stop()
	got.mu.Lock()
	flip := got.last["v1"].Sub(start)
	got.mu.Unlock()
	if flip < 0 {
		flip = 0
	}
	return flip, got
}

// TestTrafficBlueGreenFlip: only v1 before the promote, only v2 after it,
// and no request fails across the flip.
func TestTrafficBlueGreenFlip(t *testing.T) {
	t.Parallel()
	r := realPodsRack(t)
	flip, got := blueGreenFlip(t, r)
	t.Logf("clients saw only v2 %v after the promote began (goal <= 2 s)", flip)
	if got.failed != 0 {
		t.Errorf("across the flip: %v", got)
	}
	if after := r.requests(t, "web.home.arpa", nil, 1000); after.versions["v2"] != 1000 {
		t.Errorf("after the promote: %v, want v2 only", after)
	}
}

// canaryRelease walks a canary 5/25/50/100 under a steady load, checking
// the share of v2 answers at every step; it returns the load's tally.
func canaryRelease(t testing.TB, r *trafficRack) *tally {
	t.Helper()
	app := strings.Replace(webApp("canary"), "type: canary,", "type: canary, steps: [5, 25, 50, 100],", 1)
	r.setApps(t, withImage(app, sampleV1))
	r.mustRack(t, "up", "--yes")
	load := r.background("web.home.arpa", 30*time.Minute)
	r.setApps(t, withImage(app, sampleV2))
	r.mustRack(t, "up", "--yes")
	for i, step := range []float64{5, 25, 50, 100} {
		if i > 0 {
			r.mustRack(t, "app", "promote", "web")
		}
		got := r.requests(t, "web.home.arpa", nil, 1000)
		within(t, fmt.Sprintf("step %d: v2 share of %d answers", i+1, got.total()), got.share("v2"), step, 5)
		if got.failed != 0 {
			t.Errorf("step %d: %v", i+1, got)
		}
	}
	r.mustRack(t, "app", "promote", "web") // the full release
	return load.stop()
}

// TestTrafficCanaryShares: at each step of 5/25/50/100, the share of v2
// answers over 1,000 requests is within ±5 points of the step.
func TestTrafficCanaryShares(t *testing.T) {
	t.Parallel()
	r := realPodsRack(t)
	got := canaryRelease(t, r)
	if got.failed != 0 {
		t.Errorf("across the canary release: %v", got)
	}
	st := r.mustRack(t, "-o", "json", "app", "status", "web")
	if !strings.Contains(st, `"candidate": null`) || !strings.Contains(st, sampleV2) {
		t.Errorf("after the release:\n%s", st)
	}
}

// TestTrafficABRouting: every request with the match header (or cookie)
// gets v2, every other v1.
func TestTrafficABRouting(t *testing.T) {
	t.Parallel()
	r := realPodsRack(t)
	for _, tc := range []struct {
		name, match   string
		hit, miss     http.Header
		alsoHit, near http.Header
	}{
		{"header", "{header: X-Variant, value: b}",
			http.Header{"X-Variant": {"b"}}, http.Header{"X-Variant": {"a"}},
			http.Header{"X-Variant": {"b"}}, http.Header{"X-Variant": {"bb"}}},
		{"cookie", "{cookie: variant, value: b}",
			http.Header{"Cookie": {"variant=b"}}, http.Header{"Cookie": {"variant=a"}},
			http.Header{"Cookie": {"theme=dark; variant=b; lang=en"}}, http.Header{"Cookie": {"myvariant=b; variant=bb"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each case starts from a rack without the app: its release
			// state lives as long as it stays in the inventory, so after
			// the case before (web released on v2) v1 would be deployed
			// as a candidate beside v2 instead of as a fresh app.
			r.setApps(t, "")
			r.mustRack(t, "up", "--yes")
			app := strings.Replace(webApp("ab"), "type: ab,", "type: ab, match: "+tc.match+",", 1)
			r.setApps(t, withImage(app, sampleV1))
			r.mustRack(t, "up", "--yes")
			r.setApps(t, withImage(app, sampleV2))
			r.mustRack(t, "up", "--yes")
			for _, c := range []struct {
				name   string
				header http.Header
				want   string
			}{{"match", tc.hit, "v2"}, {"match among others", tc.alsoHit, "v2"}, {"other value", tc.miss, "v1"}, {"near miss", tc.near, "v1"}, {"none", nil, "v1"}} {
				if got := r.requests(t, "web.home.arpa", c.header, 500); got.versions[c.want] != 500 {
					t.Errorf("%s (%v): %v, want %s only", c.name, c.header, got, c.want)
				}
			}
			r.mustRack(t, "app", "promote", "web")
			if got := r.requests(t, "web.home.arpa", nil, 500); got.versions["v2"] != 500 {
				t.Errorf("after the promote: %v, want v2 for everyone", got)
			}
		})
	}
}

// TestTrafficShadowMirror: clients only ever see v1, while v2's own request
// counter shows it received about the mirror percentage.
func TestTrafficShadowMirror(t *testing.T) {
	t.Parallel()
	r := realPodsRack(t)
	app := strings.Replace(webApp("shadow"), "type: shadow,", "type: shadow, mirror: 20,", 1)
	r.setApps(t, withImage(app, sampleV1))
	r.mustRack(t, "up", "--yes")
	r.setApps(t, withImage(app, sampleV2))
	r.mustRack(t, "up", "--yes")
	before := r.servedByCandidate(t, "web.home.arpa", 4)
	got := r.requests(t, "web.home.arpa", nil, 2000)
	if got.versions["v1"] != 2000 {
		t.Errorf("clients: %v, want v1 only", got)
	}
	// Mirrored copies arrive asynchronously.
	time.Sleep(2 * time.Second)
	mirrored := r.servedByCandidate(t, "web.home.arpa", 4) - before
	within(t, "requests mirrored to v2", 100*float64(mirrored)/2000, 20, 5)
}

// TestTrafficNeverReadyCandidate: a candidate that never becomes ready
// (its image cannot be pulled) under load. rack up waits for it, bounded
// (RACK_APPS_READY_TIMEOUT), and fails naming it; its traffic objects never
// moved, so clients saw no error; rack app rollback removes what the failed
// run left, and rack up does not start that image again.
func TestTrafficNeverReadyCandidate(t *testing.T) {
	t.Parallel()
	r := realPodsRack(t)
	app := strings.Replace(webApp("canary"), "type: canary,", "type: canary, steps: [10, 50, 100],", 1)
	r.setApps(t, withImage(app, sampleV1))
	r.mustRack(t, "up", "--yes")
	load := r.background("web.home.arpa", 15*time.Minute)
	r.setApps(t, withImage(app, sampleMissing))
	if r.Env == nil {
		r.Env = map[string]string{}
	}
	r.Env[envReadyTimeout] = "90s"
	_, errOut, code := r.rack(t, "up", "--yes")
	if code != exitFailed || !strings.Contains(errOut, "web-green") {
		t.Errorf("rack up with a candidate that never becomes ready: exit %d\n%s", code, errOut)
	}
	st := r.mustRack(t, "-o", "json", "app", "status", "web")
	if !strings.Contains(st, `"candidate": null`) {
		t.Errorf("the failed run recorded a candidate:\n%s", st)
	}
	r.mustRack(t, "app", "rollback", "web")
	got := load.stop()
	if got.failed != 0 || got.versions["v1"] != got.total() {
		t.Errorf("clients across the failed deploy and the rollback: %v", got)
	}
	pods, err := r.Kube.CoreV1().Pods(apps.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: apps.LabelColour + "=green"})
	if err != nil || len(pods.Items) != 0 {
		t.Errorf("pods of the stray candidate remain: %d (%v)", len(pods.Items), err)
	}
	if out := r.mustRack(t, "up", "--yes"); strings.Contains(out, "candidate") {
		t.Errorf("rack up started the rolled-back image again:\n%s", out)
	}
}

// TestTrafficRecreateGap: recreate stops every old pod before the first
// new one starts. Requests fail in between: the gap is expected (a
// database must not run two versions on one volume) and logged.
func TestTrafficRecreateGap(t *testing.T) {
	t.Parallel()
	r := realPodsRack(t)
	app := strings.Replace(webApp("recreate"), "replicas: 4", "replicas: 2", 1)
	r.setApps(t, withImage(app, sampleV1))
	r.mustRack(t, "up", "--yes")
	// The pods as the API lists them, every 100 ms: when the last v1 pod
	// stopped running (its phase terminal, or the pod gone: Kubernetes'
	// Recreate starts the new pods then, before the old pod objects are
	// deleted), and when the first v2 pod appeared. A list cannot miss
	// what a watch that ends early would.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var lastOldGone, firstNew time.Time
	oldRunning := true
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for ctx.Err() == nil {
			pods, err := r.Kube.CoreV1().Pods(apps.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: apps.LabelName + "=web"})
			now := time.Now()
			if err == nil {
				running := false
				for _, p := range pods.Items {
					switch image := p.Spec.Containers[0].Image; {
					case image == sampleV1 && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed:
						running = true
					case image == sampleV2:
						mu.Lock()
						if firstNew.IsZero() {
							firstNew = now
						}
						mu.Unlock()
					}
				}
				mu.Lock()
				if oldRunning && !running {
					lastOldGone = now
				}
				oldRunning = running
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	load := r.background("web.home.arpa", 10*time.Minute)
	r.setApps(t, withImage(app, sampleV2))
	r.mustRack(t, "up", "--yes")
	got := load.stop()
	cancel()
	<-polled
	mu.Lock()
	defer mu.Unlock()
	if firstNew.IsZero() || lastOldGone.IsZero() || firstNew.Before(lastOldGone) {
		t.Errorf("a v2 pod was created at %v, the last v1 pod stopped running at %v: recreate ran both", firstNew, lastOldGone)
	}
	t.Logf("recreate: %v between the last old pod and the first new one; %d of %d requests failed in the gap (expected)",
		firstNew.Sub(lastOldGone), got.failed, got.total())
}

// BenchmarkTrafficBlueGreenFlip reports bluegreen_flip_seconds: from
// `rack app promote` to every client answer coming from v2 (goal <= 2 s).
func BenchmarkTrafficBlueGreenFlip(b *testing.B) {
	r := realPodsRack(b)
	var flip time.Duration
	for b.Loop() {
		flip, _ = blueGreenFlip(b, r)
	}
	b.ReportMetric(flip.Seconds(), "bluegreen_flip_seconds")
}

// BenchmarkTrafficCanaryReleaseErrors reports release_errors: failed client
// requests over a full canary release under load (goal 0).
func BenchmarkTrafficCanaryReleaseErrors(b *testing.B) {
	r := realPodsRack(b)
	var errs int
	for b.Loop() {
		errs = canaryRelease(b, r).failed
	}
	b.ReportMetric(float64(errs), "release_errors")
}
