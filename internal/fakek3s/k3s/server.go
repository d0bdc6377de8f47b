package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/homelab/rack/internal/child"

	"github.com/homelab/rack/internal/fakek3s/cpfile"
	"github.com/homelab/rack/internal/noderuntime"
	"github.com/homelab/rack/internal/testpki"
	"github.com/homelab/rack/inventory"
)

// A k3s server embeds its datastore and the Kubernetes control plane. The
// fake runs the real ones as its children, in the host's namespaces: etcd
// (a member of the cluster's etcd, as with --cluster-init and joining
// servers) or, for a single server, kine on SQLite (k3s' default
// datastore), then kube-apiserver on :6443, kube-controller-manager and
// kube-scheduler (both with leader election, as on several servers). A
// server on etcd also runs k3s' managed etcd controllers (etcdmember.go).
//
// Layout under <data-dir>/server, as k3s': db/etcd or db/state.db, tls/,
// logs of each component in logs/ (k3s logs them in its own journal).

const (
	etcdClientPort = "2379"
	etcdPeerPort   = "2380"
	// apiPort is the API server's port (k3s' default --https-listen-port).
	apiPort = "6443"
)

// server is a running datastore and control plane.
type server struct {
	dir      string // <data-dir>/server
	nodeName string
	nodeIP   string
	procs    []*child.Proc
	log      *logger
}

// start runs a component; it dies with the fake k3s even when that is killed
// (a k3s server's components live in its process).
func (s *server) start(name, bin string, args ...string) (*child.Proc, error) {
	logDir := filepath.Join(s.dir, "logs")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return nil, err
	}
	p, err := child.Start(name, filepath.Join(logDir, name+".log"), bin, args, child.Options{})
	if err != nil {
		return nil, err
	}
	s.procs = append(s.procs, p)
	s.log.infof("Running %s", name)
	return p, nil
}

// exited names a component that is no longer running, with its last words.
func (s *server) exited() error {
	for _, p := range s.procs {
		if p.Exited() {
			return fmt.Errorf("%s exited: %s", p.Name, p.Tail(5))
		}
	}
	return nil
}

// stop ends the components, the last started first.
func (s *server) stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		_ = s.procs[i].Stop(10 * time.Second)
	}
	s.procs = nil
}

// datastore kinds, as k3s chooses them.
const (
	storeSQLite = "sqlite" // a single server without cluster-init
	storeEtcd   = "etcd"
)

// datastoreKind is what this server runs: etcd once it has etcd data, or
// when it initialises (cluster-init) or joins a cluster; SQLite otherwise.
func (s *server) datastoreKind(st *settings) string {
	if _, err := os.Stat(filepath.Join(s.dir, "db", "etcd")); err == nil {
		return storeEtcd
	}
	if st.bool("cluster-init") || st.str("server") != "" {
		return storeEtcd
	}
	return storeSQLite
}

func (s *server) etcdURL(host, port string) string {
	return "http://" + net.JoinHostPort(host, port)
}

// startDatastore starts etcd or kine and returns the URL the API server
// uses. A joining server first adds itself as a member of the cluster's
// etcd through the server it joins.
func (s *server) startDatastore(ctx context.Context, st *settings, bin cpfile.Binaries) (string, error) {
	local := s.etcdURL("127.0.0.1", etcdClientPort)
	if s.datastoreKind(st) == storeSQLite {
		db := filepath.Join(s.dir, "db")
		if err := os.MkdirAll(db, 0o700); err != nil {
			return "", err
		}
		_, err := s.start("kine", bin.Kine, "--listen-address", "127.0.0.1:"+etcdClientPort,
			"--endpoint", "sqlite://"+filepath.Join(db, "state.db")+"?_journal=WAL&cache=shared&_busy_timeout=30000",
			"--metrics-bind-address", "0")
		return local, err
	}
	dataDir := filepath.Join(s.dir, "db", "etcd")
	peer := s.etcdURL(s.nodeIP, etcdPeerPort)
	args := []string{"--name", s.nodeName, "--data-dir", dataDir,
		"--listen-client-urls", local + "," + s.etcdURL(s.nodeIP, etcdClientPort),
		"--advertise-client-urls", s.etcdURL(s.nodeIP, etcdClientPort),
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster-token", "k3s", "--logger", "zap", "--log-level", "warn"}
	if _, err := os.Stat(dataDir); err == nil {
		// A restart: the data knows the cluster.
		_, err := s.start("etcd", bin.Etcd, args...)
		return local, err
	}
	if join := st.str("server"); join != "" {
		cluster, err := s.addMember(ctx, join, bin)
		if err != nil {
			return "", err
		}
		args = append(args, "--initial-cluster", cluster, "--initial-cluster-state", "existing")
	} else {
		args = append(args, "--initial-cluster", s.nodeName+"="+peer, "--initial-cluster-state", "new")
	}
	if err := os.MkdirAll(filepath.Dir(dataDir), 0o700); err != nil {
		return "", err
	}
	_, err := s.start("etcd", bin.Etcd, args...)
	return local, err
}

// addMember adds this server to the etcd cluster of the server it joins,
// first removing a stale member of the same name or address (a server that
// comes back blank after a disk failure), and returns --initial-cluster.
func (s *server) addMember(ctx context.Context, join string, bin cpfile.Binaries) (string, error) {
	u, err := url.Parse(join)
	if err != nil {
		return "", fatal("--server %q: %v", join, err)
	}
	endpoint := s.etcdURL(u.Hostname(), etcdClientPort)
	peer := s.etcdURL(s.nodeIP, etcdPeerPort)
	var cluster string
	err = retry(ctx, s.log, "join the etcd cluster at "+endpoint, func() error {
		members, err := etcdMembers(ctx, bin.Etcdctl, endpoint)
		if err != nil {
			return err
		}
		for _, m := range members {
			if m.name == s.nodeName || m.peer == peer {
				s.log.infof("Removing stale etcd member %s (%s) before rejoining", m.name, m.id)
				if out, err := etcdctl(ctx, bin.Etcdctl, endpoint, "member", "remove", m.id); err != nil {
					return fmt.Errorf("etcd member remove %s: %v: %s", m.id, err, out)
				}
			}
		}
		out, err := etcdctl(ctx, bin.Etcdctl, endpoint, "member", "add", s.nodeName, "--peer-urls="+peer)
		if err != nil {
			return fmt.Errorf("etcd member add: %v: %s", err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(line, "ETCD_INITIAL_CLUSTER="); ok {
				cluster = strings.Trim(v, `"`)
			}
		}
		if cluster == "" {
			return fmt.Errorf("etcd member add said nothing of the cluster: %s", out)
		}
		s.log.infof("Added etcd member %s to the cluster at %s", s.nodeName, endpoint)
		return nil
	})
	return cluster, err
}

type member struct{ id, name, peer string }

// etcdMembers lists the cluster's members ("id, status, name, peer, client, learner").
func etcdMembers(ctx context.Context, etcdctlBin, endpoint string) ([]member, error) {
	out, err := etcdctl(ctx, etcdctlBin, endpoint, "member", "list")
	if err != nil {
		return nil, fmt.Errorf("etcd member list at %s: %v: %s", endpoint, err, out)
	}
	var ms []member
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ", ")
		if len(f) >= 4 {
			ms = append(ms, member{id: f[0], name: f[2], peer: f[3]})
		}
	}
	return ms, nil
}

func etcdctl(ctx context.Context, bin, endpoint string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--endpoints", endpoint, "--dial-timeout", "5s"}, args...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// certs issues what the control plane serves and presents, from the
// cluster CA, into <server>/tls.
func (s *server) certs(st *settings, cp *cpfile.ControlPlane) (map[string]string, error) {
	ca, err := testpki.ParseCA([]byte(cp.CAPEM), []byte(cp.CAKeyPEM))
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(s.dir, "tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	files := map[string]string{}
	put := func(name string, data []byte) error {
		p := filepath.Join(dir, name)
		files[name] = p
		return writeFile(p, data, 0o600)
	}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(serviceIP(st))}
	if ip := net.ParseIP(s.nodeIP); ip != nil {
		ips = append(ips, ip)
	}
	dns := []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost", s.nodeName}
	for _, san := range st.list("tls-san") {
		if ip := net.ParseIP(san); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, san)
		}
	}
	serving, err := ca.Issue(testpki.Spec{CN: "kube-apiserver", DNS: dns, IPs: ips, Server: true})
	if err != nil {
		return nil, err
	}
	for name, data := range map[string][]byte{
		"server-ca.crt": []byte(cp.CAPEM), "server-ca.key": []byte(cp.CAKeyPEM),
		"serving-kube-apiserver.crt": serving.CertPEM, "serving-kube-apiserver.key": serving.KeyPEM,
		"service.key": []byte(cp.SAKeyPEM), "service.pub": []byte(cp.SAPubPEM),
	} {
		if err := put(name, data); err != nil {
			return nil, err
		}
	}
	for _, c := range []struct{ file, cn string }{
		{"controller.kubeconfig", "system:kube-controller-manager"},
		{"scheduler.kubeconfig", "system:kube-scheduler"},
	} {
		kp, err := ca.Issue(testpki.Spec{CN: c.cn})
		if err != nil {
			return nil, err
		}
		if err := put(c.file, kubeconfigFor("https://127.0.0.1:"+apiPort, cp.CAPEM, string(kp.CertPEM), string(kp.KeyPEM))); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// serviceIP is the kubernetes Service's address, the first of the service
// network.
func serviceIP(st *settings) string {
	cidr := inventory.DefaultServiceCIDR
	if v := st.list("service-cidr"); len(v) > 0 {
		cidr = v[0]
	}
	r, err := inventory.ParseRange(cidr)
	if err != nil {
		return "10.43.0.1"
	}
	return r.First.Next().String()
}

func clusterCIDR(st *settings) string {
	if v := st.list("cluster-cidr"); len(v) > 0 {
		return v[0]
	}
	return inventory.DefaultClusterCIDR
}

func serviceCIDR(st *settings) string {
	if v := st.list("service-cidr"); len(v) > 0 {
		return v[0]
	}
	return inventory.DefaultServiceCIDR
}

// startControlPlane runs the API server on the datastore, waits until it
// is ready, then the controller-manager and the scheduler.
func (s *server) startControlPlane(ctx context.Context, st *settings, cp *cpfile.ControlPlane, etcd string) error {
	f, err := s.certs(st, cp)
	if err != nil {
		return err
	}
	_, err = s.start("kube-apiserver", cp.Bin.APIServer,
		"--etcd-servers="+etcd,
		"--bind-address=0.0.0.0", "--secure-port="+apiPort,
		"--advertise-address="+s.nodeIP,
		"--endpoint-reconciler-type=lease",
		"--cert-dir="+filepath.Join(s.dir, "tls", "temporary-certs"),
		"--tls-cert-file="+f["serving-kube-apiserver.crt"], "--tls-private-key-file="+f["serving-kube-apiserver.key"],
		"--client-ca-file="+f["server-ca.crt"],
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+f["service.pub"], "--service-account-signing-key-file="+f["service.key"],
		"--service-cluster-ip-range="+serviceCIDR(st),
		"--authorization-mode=Node,RBAC",
		// As k3s: a kubelet may change only its own Node, and not set
		// labels outside the kubelet's allowed set.
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true", "--profiling=false", "--v=0",
		// k3s' API server reaches webhook Services through the kube-proxy of
		// the server's own node. A server of the test rack that is not a
		// real node has none: it dials the Service's endpoints (pods) instead,
		// over routes to the real nodes' pod networks (see podRoutes).
		"--enable-aggregator-routing="+strconv.FormatBool(cp.PodNetwork && !cp.RealNode))
	if err != nil {
		return err
	}
	if err := s.waitAPI(ctx, cp); err != nil {
		return err
	}
	if _, err := s.start("kube-controller-manager", cp.Bin.ControllerManager,
		"--kubeconfig="+f["controller.kubeconfig"], "--authentication-kubeconfig="+f["controller.kubeconfig"], "--authorization-kubeconfig="+f["controller.kubeconfig"],
		"--leader-elect=true", "--secure-port=0", "--use-service-account-credentials=true",
		"--kube-api-qps=200", "--kube-api-burst=400",
		"--service-account-private-key-file="+f["service.key"], "--root-ca-file="+f["server-ca.crt"],
		"--cluster-signing-cert-file="+f["server-ca.crt"], "--cluster-signing-key-file="+f["server-ca.key"],
		"--service-cluster-ip-range="+serviceCIDR(st), "--cluster-cidr="+clusterCIDR(st),
		"--allocate-node-cidrs=true", "--node-cidr-mask-size=24", "--profiling=false", "--v=0"); err != nil {
		return err
	}
	_, err = s.start("kube-scheduler", cp.Bin.Scheduler,
		"--kubeconfig="+f["scheduler.kubeconfig"], "--authentication-kubeconfig="+f["scheduler.kubeconfig"], "--authorization-kubeconfig="+f["scheduler.kubeconfig"],
		"--leader-elect=true", "--secure-port=0", "--profiling=false", "--v=0")
	return err
}

// waitAPI waits until the local API server's /readyz answers ok, failing
// early when a component exits.
func (s *server) waitAPI(ctx context.Context, cp *cpfile.ControlPlane) error {
	api, err := newAPIClient("https://127.0.0.1:"+apiPort, cp)
	if err != nil {
		return err
	}
	hc := api.HTTP
	hc.Timeout = 5 * time.Second
	defer hc.CloseIdleConnections()
	last := ""
	for i := 0; ; i++ {
		if err := s.exited(); err != nil {
			return err
		}
		resp, err := hc.Get("https://127.0.0.1:" + apiPort + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				s.log.infof("kube-apiserver is ready")
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if i%20 == 19 {
			s.log.infof("Waiting for kube-apiserver to be ready: %s", last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// podRoutes keeps routes to every real node's pod network in this
// (non-real) server's namespace, until ctx ends.
func (s *server) podRoutes(ctx context.Context, cp *cpfile.ControlPlane) {
	routes := noderuntime.PodRoutes{
		Client: noderuntime.Admin{URL: "https://127.0.0.1:" + apiPort, CAPEM: []byte(cp.CAPEM), CertPEM: []byte(cp.CertPEM), KeyPEM: []byte(cp.KeyPEM)},
		Dev:    "eth0", Self: s.nodeName, Logf: s.log.warnf,
	}
	go func() { _ = routes.Run(ctx) }()
}

// watch returns when a component exits (a k3s server whose API server
// dies exits too, and its service manager restarts it) or ctx ends.
func (s *server) watch(ctx context.Context) error {
	for {
		if err := s.exited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}
