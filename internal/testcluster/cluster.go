// Package testcluster starts a real Kubernetes control plane for tests
// and for `make demo`: kine (SQLite), kube-apiserver, kube-controller-manager,
// kube-scheduler and kwok, which keeps every Node Ready and runs the pods
// scheduled to them (as far as their status goes). There are no kubelets:
// fake k3s binaries on test hosts (internal/fakek3s) register the Nodes.
//
// The components are built by scripts/build-controlplane.sh (or taken from
// $RACK_CONTROLPLANE_DIR). Each cluster lives in its own directory on a
// tmpfs with its own CA and free ports, so clusters of concurrent tests
// never meet; leftovers of a crashed run are removed by the next Start.
package testcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/homelab/rack/internal/child"
	"github.com/homelab/rack/internal/jsonapi"

	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/internal/testpki"

	"github.com/homelab/rack/internal/testnet"
	"github.com/homelab/rack/inventory"

	"github.com/homelab/rack/internal/flock"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Network settings: k3s' defaults, from the one pair of constants rack and
// the test rack share, so that what rack computes from a k3s cluster holds
// here too, and the blackhole routes (internal/testnet) cover them.
const (
	ServiceCIDR = inventory.DefaultServiceCIDR
	// ServiceIP is the kubernetes Service's cluster IP, the first of ServiceCIDR.
	ServiceIP   = "10.43.0.1"
	ClusterCIDR = inventory.DefaultClusterCIDR
)

// Options configure Start.
type Options struct {
	// BindAddress is the IP kube-apiserver listens on (default 127.0.0.1).
	// Tests with test hosts use the testrack bridge address, which the
	// hosts' network namespaces can reach.
	BindAddress string
	// SANs are extra IPs or DNS names for the serving certificate: the
	// addresses under which clients reach the apiserver, such as test hosts
	// whose fake k3s forwards its :6443 here.
	SANs []string
	// Binaries overrides FindBinaries (for callers that located them once).
	Binaries *Binaries
	// StateDir is the parent of the cluster's directory (default a folder
	// on /dev/shm, or the temp dir when there is no /dev/shm).
	StateDir string
	// Logf receives progress notes; nil discards them.
	Logf func(format string, args ...any)
}

// Option changes the Options New uses.
type Option func(*Options)

// WithBindAddress makes kube-apiserver listen on addr.
func WithBindAddress(addr string) Option { return func(o *Options) { o.BindAddress = addr } }

// WithSANs adds IPs or DNS names to the apiserver's serving certificate.
func WithSANs(sans ...string) Option {
	return func(o *Options) { o.SANs = append(o.SANs, sans...) }
}

// WithOptions edits the Options directly.
func WithOptions(f func(*Options)) Option { return Option(f) }

// Cluster is a running control plane.
type Cluster struct {
	// URL is kube-apiserver's address, https://BindAddress:port.
	URL string
	// CAPEM is the cluster CA: it signed the serving certificate and every
	// client certificate the apiserver accepts.
	CAPEM []byte
	// CAKeyPEM is the CA's key: a fake k3s server signs its nodes' client
	// certificates with it, as k3s does with its own CA.
	CAKeyPEM []byte
	// AdminCertPEM and AdminKeyPEM are a client certificate in
	// system:masters.
	AdminCertPEM, AdminKeyPEM []byte
	// AdminKubeconfig is the path of a kubeconfig with those credentials.
	AdminKubeconfig string
	// EtcdURL is the datastore's etcd-protocol URL (kine; plain http on loopback).
	EtcdURL string
	// Dir holds the cluster's data, certificates and component logs; Close
	// removes it.
	Dir string
	// StartupTime is how long Start took until /readyz answered ok.
	StartupTime time.Duration

	ca    *testpki.KeyPair
	procs []*child.Proc
	// unroute releases the blackhole routes held while the cluster runs.
	unroute func() error
	logf    func(string, ...any)
	closeMu sync.Mutex
	closed  bool
}

// New starts a control plane for a test and stops it in t.Cleanup, also
// when the test fails (after logging the components' last words). It skips
// the test when not running as root or when the binaries cannot be had,
// unless RACK_TEST_REQUIRE_ROOT=1, where it fails instead.
func New(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	skip := func(format string, args ...any) {
		t.Helper()
		testenv.SkipOrFail(t, format, args...)
	}
	if uid := os.Geteuid(); uid != 0 {
		skip("testcluster: the test control plane needs root (running as uid %d)", uid)
	}
	o := Options{Logf: t.Logf}
	for _, opt := range opts {
		opt(&o)
	}
	// Generous: the first call on a machine builds the control plane.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if o.Binaries == nil {
		b, err := FindBinaries(ctx, o.Logf)
		if errors.Is(err, errNoBinaries) {
			skip("%v", err)
		}
		if err != nil {
			t.Fatalf("testcluster: %v", err)
		}
		o.Binaries = &b
	}
	c, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("testcluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.logTails(t.Logf)
		}
		if err := c.Close(); err != nil {
			t.Errorf("testcluster: %v", err)
		}
	})
	return c
}

// startAttempts bounds retries when a free port picked for a component was
// taken by someone else before the component could bind it.
const startAttempts = 3

// Start starts a control plane and returns once /readyz answers ok and the
// controller-manager has created the default ServiceAccount (so pods can
// be created at once, as on a fresh k3s). Close stops it; on error Start
// has already cleaned up.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.BindAddress == "" {
		o.BindAddress = "127.0.0.1"
	}
	if ip := net.ParseIP(o.BindAddress); ip == nil {
		return nil, fmt.Errorf("BindAddress %q is not an IP address", o.BindAddress)
	}
	if o.Binaries == nil {
		b, err := FindBinaries(ctx, o.Logf)
		if err != nil {
			return nil, err
		}
		o.Binaries = &b
	}
	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		var c *Cluster
		c, err = start(ctx, o)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, errPortTaken) {
			break
		}
		o.Logf("testcluster: %v; retrying with other ports", err)
	}
	return nil, err
}

var errPortTaken = errors.New("a port was taken meanwhile")

func start(ctx context.Context, o Options) (_ *Cluster, err error) {
	began := time.Now()
	dir, err := newClusterDir(ctx, o.StateDir, o.Logf)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, logf: o.Logf}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	// Before any component runs: the API server's first call to a webhook
	// Service must fail here, not leave the machine.
	if c.unroute, err = testnet.Hold(ctx); err != nil {
		return nil, fmt.Errorf("routing the cluster networks to blackhole: %w", err)
	}
	ports, err := freePorts(o.BindAddress, "127.0.0.1")
	if err != nil {
		return nil, err
	}
	apiPort, etcdClient := ports[0], ports[1]
	host := o.BindAddress
	if net.ParseIP(host).IsUnspecified() {
		host = "127.0.0.1" // listening everywhere; loopback is in the certificate
	}
	c.URL = "https://" + net.JoinHostPort(host, strconv.Itoa(apiPort))
	c.EtcdURL = "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	if err := c.writePKI(o); err != nil {
		return nil, err
	}
	b := o.Binaries

	// kine on SQLite, as a single k3s server keeps its state, not Debian's
	// etcd 3.4.23: that etcd lacks watch progress requests, so the API server
	// refuses streaming watches, which kwok asks for on every watch (it
	// always watches from resourceVersion 0). Its caches then go stale, it
	// renews Node leases from stale copies, conflict after conflict, until
	// a Node misses its 50 s grace period and the node controller marks the
	// Node's pods NotReady for good: a Helm release waiting for them never
	// became ready. kine is built to serve them (build-controlplane.sh).
	if err := os.MkdirAll(c.path("kine"), 0o700); err != nil {
		return nil, err
	}
	if err := c.spawn("kine", b.Kine,
		"--listen-address=127.0.0.1:"+strconv.Itoa(etcdClient),
		"--endpoint=sqlite://"+c.path("kine")+"/state.db?_journal=WAL&cache=shared&_busy_timeout=30000",
		"--metrics-bind-address=0",
	); err != nil {
		return nil, err
	}

	advertise := o.BindAddress
	reconciler := "lease"
	if ip := net.ParseIP(o.BindAddress); ip.IsLoopback() || ip.IsUnspecified() {
		// Endpoints may not point at loopback: the reconciler would fail
		// forever and fill the log. Nothing in-cluster runs to use it.
		advertise, reconciler = "127.0.0.1", "none"
	}
	if err := c.spawn("kube-apiserver", b.APIServer,
		"--etcd-servers="+c.EtcdURL,
		"--bind-address="+o.BindAddress,
		"--secure-port="+strconv.Itoa(apiPort),
		"--advertise-address="+advertise,
		"--endpoint-reconciler-type="+reconciler,
		"--cert-dir="+c.path("apiserver-certs"),
		"--tls-cert-file="+c.path("apiserver.crt"),
		"--tls-private-key-file="+c.path("apiserver.key"),
		"--client-ca-file="+c.path("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+c.path("sa.pub"),
		"--service-account-signing-key-file="+c.path("sa.key"),
		"--service-cluster-ip-range="+ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		// As k3s: a kubelet may change only its own Node, and not set
		// labels outside the kubelet's allowed set.
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=0",
	); err != nil {
		return nil, err
	}
	readyCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := c.WaitReady(readyCtx); err != nil {
		return nil, err
	}
	// Only once /readyz is ok: the controller-manager gives up when its RBAC
	// roles (bootstrapped by the apiserver) are not there within seconds, which
	// on a loaded machine they are not.
	if err := c.spawn("kube-controller-manager", b.ControllerManager,
		"--kubeconfig="+c.path("controller-manager.kubeconfig"),
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=true",
		// Every controller gets its own service account and token at
		// startup; the default client rate limit (20 qps) makes that take
		// seconds.
		"--kube-api-qps=200",
		"--kube-api-burst=400",
		"--service-account-private-key-file="+c.path("sa.key"),
		"--root-ca-file="+c.path("ca.crt"),
		"--cluster-signing-cert-file="+c.path("ca.crt"),
		"--cluster-signing-key-file="+c.path("ca.key"),
		"--service-cluster-ip-range="+ServiceCIDR,
		"--cluster-cidr="+ClusterCIDR,
		"--allocate-node-cidrs=true",
		"--node-cidr-mask-size=24",
		"--profiling=false",
		"--v=0",
	); err != nil {
		return nil, err
	}
	if err := c.spawn("kube-scheduler", b.Scheduler,
		"--kubeconfig="+c.path("scheduler.kubeconfig"),
		"--leader-elect=false",
		"--secure-port=0",
		"--profiling=false",
		"--v=0",
	); err != nil {
		return nil, err
	}

	// kwok gives up after ~30 s of an unreachable apiserver with growing
	// back-off, so it starts only now and notices new Nodes at once.
	if err := c.spawn("kwok", b.Kwok,
		"--kubeconfig="+c.path("kwok.kubeconfig"),
		"--config="+c.path("kwok-stages.yaml"),
		// Nodes a real kubelet registered (internal/noderuntime) are its own.
		"--manage-nodes-with-label-selector=!"+RealKubeletLabel,
		"--cidr="+ClusterCIDR,
		"--node-lease-duration-seconds=40",
	); err != nil {
		return nil, err
	}
	// Pods are refused until the controller-manager has created the
	// namespace's default ServiceAccount; a fresh k3s has it, so wait.
	if err := c.waitDefaultServiceAccount(readyCtx); err != nil {
		return nil, err
	}
	c.StartupTime = time.Since(began)
	o.Logf("testcluster: control plane %s ready in %v (dir %s)", c.URL, c.StartupTime.Round(time.Millisecond), c.Dir)
	return c, nil
}

func (c *Cluster) path(name string) string { return filepath.Join(c.Dir, name) }

func (c *Cluster) spawn(name, bin string, args ...string) error {
	p, err := spawn(c.Dir, name, bin, args...)
	if err != nil {
		return err
	}
	c.closeMu.Lock()
	c.procs = append(c.procs, p)
	c.closeMu.Unlock()
	return nil
}

// writePKI writes the CA, the serving and client certificates, the
// service-account key pair, the kubeconfigs and kwok's configuration.
func (c *Cluster) writePKI(o Options) error {
	ca, err := testpki.NewCA("rack-testcluster-ca")
	if err != nil {
		return err
	}
	c.ca = ca
	c.CAPEM, c.CAKeyPEM = ca.CertPEM, ca.KeyPEM
	dns, ips := servingSANs(o.BindAddress, o.SANs)
	serving, err := ca.Issue(testpki.Spec{CN: "kube-apiserver", DNS: dns, IPs: ips, Server: true})
	if err != nil {
		return err
	}
	saPriv, saPub, err := testpki.ServiceAccountKey()
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.crt":           ca.CertPEM,
		"ca.key":           ca.KeyPEM,
		"apiserver.crt":    serving.CertPEM,
		"apiserver.key":    serving.KeyPEM,
		"sa.key":           saPriv,
		"sa.pub":           saPub,
		"kwok-stages.yaml": o.Binaries.KwokStages,
	}
	// Each component under its own identity, so the default RBAC roles (and
	// their gaps) apply as in a real cluster. kwok acts for every kubelet.
	clients := []struct {
		file, cn string
		orgs     []string
	}{
		{"admin.kubeconfig", "system:admin", []string{"system:masters"}},
		{"controller-manager.kubeconfig", "system:kube-controller-manager", nil},
		{"scheduler.kubeconfig", "system:kube-scheduler", nil},
		{"kwok.kubeconfig", "kwok", []string{"system:masters"}},
	}
	for _, cl := range clients {
		kp, err := ca.Issue(testpki.Spec{CN: cl.cn, Orgs: cl.orgs})
		if err != nil {
			return err
		}
		if cl.cn == "system:admin" {
			c.AdminCertPEM, c.AdminKeyPEM = kp.CertPEM, kp.KeyPEM
		}
		if files[cl.file], err = Kubeconfig(c.URL, ca.CertPEM, kp.CertPEM, kp.KeyPEM); err != nil {
			return err
		}
	}
	for name, data := range files {
		if err := os.WriteFile(c.path(name), data, 0o600); err != nil {
			return err
		}
	}
	c.AdminKubeconfig = c.path("admin.kubeconfig")
	return nil
}

// Kubeconfig renders a kubeconfig with client-certificate credentials, in
// the layout k3s writes (cluster, context and user all named "default").
func Kubeconfig(server string, caPEM, certPEM, keyPEM []byte) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["default"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["default"] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "default", AuthInfo: "default"}
	cfg.CurrentContext = "default"
	return clientcmd.Write(*cfg)
}

// ClientCert issues a client certificate for user in groups, signed by the
// cluster CA, for tests that need someone other than the admin (RBAC
// applies as usual).
func (c *Cluster) ClientCert(user string, groups ...string) (certPEM, keyPEM []byte, err error) {
	kp, err := c.ca.Issue(testpki.Spec{CN: user, Orgs: groups})
	if err != nil {
		return nil, nil, err
	}
	return kp.CertPEM, kp.KeyPEM, nil
}

// RESTConfig returns a client configuration with the admin credentials.
func (c *Cluster) RESTConfig() *rest.Config {
	return &rest.Config{
		Host: c.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   c.CAPEM,
			CertData: c.AdminCertPEM,
			KeyData:  c.AdminKeyPEM,
		},
		// Tests poll; the client-side limiter's defaults (5 qps) only slow them.
		QPS:   100,
		Burst: 200,
	}
}

// Clientset returns a client-go clientset with the admin credentials. It
// panics only if client-go rejects the configuration RESTConfig builds,
// which would be a bug here.
func (c *Cluster) Clientset() *kubernetes.Clientset {
	cs, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		panic(fmt.Sprintf("testcluster: clientset: %v", err))
	}
	return cs
}

// HTTPClient returns an http.Client that trusts the cluster CA and presents
// the admin certificate.
func (c *Cluster) HTTPClient() *http.Client {
	api, err := jsonapi.New(c.URL, c.CAPEM, c.AdminCertPEM, c.AdminKeyPEM)
	if err != nil {
		panic(fmt.Sprintf("testcluster: admin client: %v", err))
	}
	api.HTTP.Timeout = 10 * time.Second
	return api.HTTP
}

// WaitReady waits until /readyz answers ok, failing early when a component
// has exited.
func (c *Cluster) WaitReady(ctx context.Context) error {
	hc := c.HTTPClient()
	defer hc.CloseIdleConnections()
	var last string
	for {
		if p := c.exitedProc(); p != nil {
			tail := p.Tail(15)
			if strings.Contains(tail, "address already in use") {
				return fmt.Errorf("%s exited: %w", p.Name, errPortTaken)
			}
			return fmt.Errorf("%s exited during startup:\n%s", p.Name, tail)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "ok" {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s/readyz (last answer: %s): %w", c.URL, last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster) waitDefaultServiceAccount(ctx context.Context) error {
	hc := c.HTTPClient()
	defer hc.CloseIdleConnections()
	for {
		if err := c.Alive(); err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/api/v1/namespaces/default/serviceaccounts/default", nil)
		if err != nil {
			return err
		}
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the default ServiceAccount (kube-controller-manager): %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// exitedProc returns a component that is no longer running, if any.
func (c *Cluster) exitedProc() *child.Proc {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	for _, p := range c.procs {
		if p.Exited() {
			return p
		}
	}
	return nil
}

// Alive returns an error naming the first component that has exited.
func (c *Cluster) Alive() error {
	if p := c.exitedProc(); p != nil {
		return fmt.Errorf("testcluster: %s exited:\n%s", p.Name, p.Tail(15))
	}
	return nil
}

// logTails passes the end of every component's log to logf.
func (c *Cluster) logTails(logf func(string, ...any)) {
	c.closeMu.Lock()
	procs := append([]*child.Proc(nil), c.procs...)
	c.closeMu.Unlock()
	for _, p := range procs {
		state := "running"
		if p.Exited() {
			state = "exited: " + p.Cmd.ProcessState.String()
		}
		logf("testcluster: %s (%s), last log lines:\n%s", p.Name, state, p.Tail(20))
	}
}

// Close stops every component and removes Dir. It is safe to call more
// than once.
func (c *Cluster) Close() error {
	c.closeMu.Lock()
	if c.closed {
		c.closeMu.Unlock()
		return nil
	}
	c.closed = true
	procs := c.procs
	c.closeMu.Unlock()
	// Everything at once: nothing here needs an orderly shutdown, and the
	// data is thrown away.
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() { errs[i] = p.Stop(stopGrace) })
	}
	wg.Wait()
	if c.Dir != "" {
		errs = append(errs, os.RemoveAll(c.Dir))
	}
	// Only once every component has stopped.
	if c.unroute != nil {
		errs = append(errs, c.unroute())
	}
	return errors.Join(errs...)
}

// stateRoot is the machine-wide folder holding every cluster's directory
// (per user, so that a developer's runs and root's never share it).
func stateRoot() (string, error) {
	base := os.TempDir()
	// The datastore syncs on every write; on tmpfs that costs nothing.
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	root := filepath.Join(base, "rack-testcluster-"+strconv.Itoa(os.Geteuid()))
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", err
	}
	return root, nil
}

// newClusterDir creates a cluster's directory with its owner record, after
// removing the directories (and processes) of owners that died.
func newClusterDir(ctx context.Context, parent string, logf func(string, ...any)) (string, error) {
	root := parent
	if root == "" {
		var err error
		if root, err = stateRoot(); err != nil {
			return "", err
		}
	} else if err := os.MkdirAll(root, 0o700); err != nil {
		return "", err
	}
	lock, err := flock.Acquire(ctx, filepath.Join(root, "lock"))
	if err != nil {
		return "", err
	}
	defer lock.Unlock()
	if err := sweep(root, logf); err != nil {
		// Someone else's leftovers must not stop this cluster.
		logf("testcluster: cleaning up: %v", err)
	}
	dir, err := os.MkdirTemp(root, "c")
	if err != nil {
		return "", err
	}
	me, err := self()
	if err != nil {
		return "", err
	}
	b, _ := json.Marshal(me)
	if err := os.WriteFile(filepath.Join(dir, ownerFile), b, 0o600); err != nil {
		return "", err
	}
	return dir, nil
}

// freePorts asks the kernel for a free port on each address. The ports
// are released before the components bind them, so another process may
// grab one in between; Start retries when that happens.
func freePorts(addrs ...string) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for _, a := range addrs {
		l, err := net.Listen("tcp", net.JoinHostPort(a, "0"))
		if err != nil {
			return nil, fmt.Errorf("finding a free port on %s: %w", a, err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
