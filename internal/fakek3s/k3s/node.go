package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/homelab/rack/internal/fakek3s/cpfile"
	"github.com/homelab/rack/internal/jsonapi"
)

// The ConfigMap in which the first server records the cluster token's hash,
// standing in for the bootstrap data that real k3s encrypts with the token.
const (
	clusterNamespace = "kube-system"
	clusterRecord    = "k3s-fake-cluster"
)

// retryEvery is how often a node retries an unreachable or not yet
// initialised server, as k3s does (forever, until stopped).
const retryEvery = 2 * time.Second

// exitError ends runNode with a fatal log line and exit status 1.
type exitError struct{ msg string }

func (e *exitError) Error() string { return e.msg }

func fatal(format string, args ...any) error { return &exitError{fmt.Sprintf(format, args...)} }

// runNode runs `k3s server` or `k3s agent` until SIGTERM or SIGINT.
func runNode(role string, args []string, log *logger) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if role == "server" {
		log.infof("Starting k3s %s (%s)", version, commit)
	} else {
		log.infof("Starting k3s agent %s (%s)", version, commit)
	}
	err := node(ctx, role, args, log)
	var ee *exitError
	switch {
	case err == nil, ctx.Err() != nil:
		log.infof("Shutting down k3s %s", role)
		return 0
	case errors.As(err, &ee):
		log.fatalf("%s", ee.msg)
	default:
		log.fatalf("%v", err)
	}
	return 1
}

func node(ctx context.Context, role string, args []string, log *logger) error {
	// The service manager's notify socket is for this process alone, as in
	// k3s, which keeps it from containerd: a child saying READY=1 as it starts
	// (etcd does) must never look like k3s being ready.
	notifySocket := os.Getenv("NOTIFY_SOCKET")
	os.Unsetenv("NOTIFY_SOCKET")
	s, err := loadSettings(args, log.warnf)
	if err != nil {
		return err
	}
	if err := validateNodeLabels(s); err != nil {
		return err
	}
	cp, err := cpfile.Read(controlPlaneFile)
	if err != nil {
		return fmt.Errorf("fake k3s: reading the test control plane description: %w", err)
	}
	caHash := sha256Hex([]byte(cp.CAPEM))
	dataDir := s.str("data-dir")
	if dataDir == "" {
		dataDir = "/var/lib/rancher/k3s"
	}
	serverURL := s.str("server")
	isServer := role == "server"
	if !isServer && serverURL == "" {
		return fatal("--server is required")
	}

	tok, err := readToken(s, "token", "token-file")
	if err != nil {
		return err
	}
	if tok.secret == "" && isServer {
		// A server restarted without a token reuses the one it wrote when it
		// first started, as k3s does.
		if b, err := os.ReadFile(filepath.Join(dataDir, "server", "token")); err == nil {
			tok = parseToken(string(b))
		}
	}
	if tok.secret == "" {
		if !isServer || serverURL != "" {
			return fatal("--token is required")
		}
		// A first server without a token makes one up, like k3s.
		tok.secret = randomHex(16)
	}
	if tok.caHash != "" && tok.caHash != caHash {
		return fatal("token CA hash does not match the Cluster CA certificate hash")
	}
	agentTok, err := readToken(s, "agent-token", "agent-token-file")
	if err != nil {
		return err
	}

	n, err := describeNode(s, role)
	if err != nil {
		return err
	}
	localURL := ""
	var srv *server
	if isServer {
		srv = &server{dir: filepath.Join(dataDir, "server"), nodeName: n.name, nodeIP: n.internalIP(), log: log}
		defer srv.stop()
		localURL = "https://127.0.0.1:" + apiPort
	}
	if serverURL != "" {
		// A joining node first proves the server is the cluster's and the
		// token is right; a server then joins its datastore.
		if err := join(ctx, serverURL, cp, isServer, tok, log); err != nil {
			return err
		}
	}
	if isServer {
		etcd, err := srv.startDatastore(ctx, s, cp.Bin)
		if err != nil {
			return err
		}
		if err := srv.startControlPlane(ctx, s, cp, etcd); err != nil {
			return err
		}
		if cp.PodNetwork && !cp.RealNode {
			srv.podRoutes(ctx, cp)
		}
		if srv.datastoreKind(s) == storeEtcd {
			admin, err := newAPIClient(localURL, cp)
			if err != nil {
				return err
			}
			srv.etcdControllers(ctx, admin, cp.Bin.Etcdctl)
		}
		if serverURL == "" {
			api, err := newAPIClient(localURL, cp)
			if err != nil {
				return err
			}
			if err := initCluster(ctx, api, tok, agentTok, log); err != nil {
				return err
			}
		}
		if err := writeServerFiles(s, dataDir, caHash, tok, agentTok, cp, localURL); err != nil {
			return err
		}
	}

	apiBase := localURL
	if !isServer {
		apiBase = serverURL
	}
	// k3s' supervisor checks the node password before it hands out a
	// kubelet certificate (nodepassword.go).
	if err := checkNodePassword(ctx, cp, apiBase, dataDir, n.name, isServer, log); err != nil {
		return err
	}
	// The kubelet registers under its own identity; the server's node-role
	// labels come from k3s' server side, with the admin's.
	if cp.RealNode {
		rt, err := startRealNode(ctx, s, cp, n, apiBase, dataDir, log)
		if err != nil {
			return err
		}
		// `systemctl stop k3s` leaves containers running, as k3s does.
		defer rt.Stop(context.Background())
	} else {
		kubelet, err := nodeClient(apiBase, cp, n.name)
		if err != nil {
			return err
		}
		if err := retry(ctx, log, "register node "+n.name, func() error { return registerNode(ctx, kubelet, n) }); err != nil {
			return err
		}
		// As a kubelet's status loop (every 10 s): what it reports about
		// itself wins over anyone who wrote the status meanwhile (kwok's
		// node initialisation, from a stale read, can).
		go reportStatus(ctx, kubelet, n)
	}
	if isServer {
		admin, err := newAPIClient(apiBase, cp)
		if err != nil {
			return err
		}
		if err := retry(ctx, log, "label node "+n.name, func() error { return labelServer(ctx, admin, n) }); err != nil {
			return err
		}
	}
	log.infof("Node %s registered (kubelet %s)", n.name, version)
	notifyReady(notifySocket, log)
	log.infof("k3s %s is up and running", role)
	if srv != nil {
		return srv.watch(ctx)
	}
	<-ctx.Done()
	return nil
}

// token is a k3s token: a plain secret, or the secure form
// K10<sha256 of the CA>::<user>:<secret> that node-token holds.
type token struct {
	caHash, secret string
}

func parseToken(raw string) token {
	raw = strings.TrimSpace(raw)
	if rest, ok := strings.CutPrefix(raw, "K10"); ok {
		if hash, creds, ok := strings.Cut(rest, "::"); ok {
			if _, secret, ok := strings.Cut(creds, ":"); ok {
				return token{caHash: hash, secret: secret}
			}
			return token{caHash: hash, secret: creds}
		}
	}
	return token{secret: raw}
}

// readToken takes the token from its flag, or else from its file flag.
func readToken(s *settings, key, fileKey string) (token, error) {
	if v := s.str(key); v != "" {
		return parseToken(v), nil
	}
	if f := s.str(fileKey); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return token{}, fmt.Errorf("reading --%s: %w", fileKey, err)
		}
		return parseToken(string(b)), nil
	}
	return token{}, nil
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// clusterData is the cluster record's content.
type clusterData struct {
	TokenHash      string `json:"tokenHash"`
	AgentTokenHash string `json:"agentTokenHash,omitempty"`
}

type configMap struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   map[string]any    `json:"metadata"`
	Data       map[string]string `json:"data"`
}

const recordPath = "/api/v1/namespaces/" + clusterNamespace + "/configmaps/" + clusterRecord

func getRecord(ctx context.Context, api *jsonapi.Client) (clusterData, error) {
	var cm configMap
	if err := api.Do(ctx, http.MethodGet, recordPath, "", nil, &cm); err != nil {
		return clusterData{}, err
	}
	return clusterData{TokenHash: cm.Data["tokenHash"], AgentTokenHash: cm.Data["agentTokenHash"]}, nil
}

// initCluster records the token on the first server, or checks it against
// the record an earlier start left (k3s refuses to start on existing
// bootstrap data encrypted with another token).
func initCluster(ctx context.Context, api *jsonapi.Client, tok, agentTok token, log *logger) error {
	want := clusterData{TokenHash: sha256Hex([]byte(tok.secret))}
	if agentTok.secret != "" {
		want.AgentTokenHash = sha256Hex([]byte(agentTok.secret))
	}
	return retry(ctx, log, "initialize the cluster", func() error {
		got, err := getRecord(ctx, api)
		switch {
		case err == nil:
			if got.TokenHash != want.TokenHash {
				return fatal("starting kubernetes: preparing server: bootstrap data already found and encrypted with different token")
			}
			if got.AgentTokenHash != want.AgentTokenHash {
				patch := map[string]any{"data": map[string]any{"agentTokenHash": nilIfEmpty(want.AgentTokenHash)}}
				return api.Do(ctx, http.MethodPatch, recordPath, "application/merge-patch+json", patch, nil)
			}
			return nil
		case jsonapi.StatusOf(err) == http.StatusNotFound:
			data := map[string]string{"tokenHash": want.TokenHash}
			if want.AgentTokenHash != "" {
				data["agentTokenHash"] = want.AgentTokenHash
			}
			cm := configMap{APIVersion: "v1", Kind: "ConfigMap",
				Metadata: map[string]any{"name": clusterRecord, "namespace": clusterNamespace},
				Data:     data}
			err := api.Do(ctx, http.MethodPost, "/api/v1/namespaces/"+clusterNamespace+"/configmaps", "", cm, nil)
			if jsonapi.StatusOf(err) == http.StatusConflict {
				return errors.New("cluster record created concurrently; checking it")
			}
			if err == nil {
				log.infof("Cluster initialized: token recorded")
			}
			return err
		default:
			return err
		}
	})
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// join validates the server a joining server or agent was given: it must
// answer over TLS verified with the cluster CA, and the token must be the
// cluster's. A wrong token ends the process with status 1.
func join(ctx context.Context, serverURL string, cp *cpfile.ControlPlane, isServer bool, tok token, log *logger) error {
	u, err := url.Parse(serverURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fatal("--server %q: expected https://HOST:PORT", serverURL)
	}
	api, err := newAPIClient(serverURL, cp)
	if err != nil {
		return err
	}
	err = retry(ctx, log, "validate the connection to "+serverURL, func() error {
		// The equivalent of fetching /cacerts: an unauthenticated request
		// whose TLS handshake proves the server is the cluster's.
		err := api.Do(ctx, http.MethodGet, "/version", "", nil, nil)
		if isCertError(err) {
			return fatal("Failed to validate connection to cluster at %s: %v", serverURL, err)
		}
		return err
	})
	if err != nil {
		return err
	}
	hash := sha256Hex([]byte(tok.secret))
	return retry(ctx, log, "retrieve the cluster configuration from "+serverURL, func() error {
		rec, err := getRecord(ctx, api)
		if jsonapi.StatusOf(err) == http.StatusNotFound {
			return errors.New("the cluster is not initialized yet")
		}
		if err != nil {
			return err
		}
		ok := hash == rec.TokenHash || (!isServer && rec.AgentTokenHash != "" && hash == rec.AgentTokenHash)
		if !ok {
			return fatal("Failed to validate connection to cluster at %s: token rejected: it does not match the cluster token (401 Unauthorized)", serverURL)
		}
		log.infof("Validated the token with the cluster at %s", serverURL)
		return nil
	})
}

// isCertError reports a certificate the cluster CA does not vouch for
// (for this name): the server is not the cluster's, and retrying cannot
// fix that.
func isCertError(err error) bool {
	var cve *tls.CertificateVerificationError
	var he x509.HostnameError
	var ua x509.UnknownAuthorityError
	return errors.As(err, &cve) || errors.As(err, &he) || errors.As(err, &ua)
}

// retry runs f until it succeeds, returns an exitError, or ctx ends,
// logging each failure the way k3s logs its waits.
func retry(ctx context.Context, log *logger, what string, f func() error) error {
	for {
		err := f()
		var ee *exitError
		if err == nil || errors.As(err, &ee) {
			return err
		}
		log.infof("Waiting to %s: %v", what, err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retryEvery):
		}
	}
}

// writeServerFiles writes what a k3s server leaves on disk for others:
// the tokens (0600) and the admin kubeconfig.
func writeServerFiles(s *settings, dataDir, caHash string, tok, agentTok token, cp *cpfile.ControlPlane, localURL string) error {
	serverDir := filepath.Join(dataDir, "server")
	if err := os.MkdirAll(serverDir, 0o700); err != nil {
		return err
	}
	full := "K10" + caHash + "::server:" + tok.secret
	agentFull := full
	if agentTok.secret != "" {
		agentFull = "K10" + caHash + "::node:" + agentTok.secret
	}
	for name, content := range map[string]string{"token": full, "node-token": full, "agent-token": agentFull} {
		if err := writeFile(filepath.Join(serverDir, name), []byte(content+"\n"), 0o600); err != nil {
			return err
		}
	}
	kubeconfig := s.str("write-kubeconfig")
	if kubeconfig == "" {
		kubeconfig = "/etc/rancher/k3s/k3s.yaml"
	}
	mode := os.FileMode(0o600)
	if m := s.str("write-kubeconfig-mode"); m != "" {
		v, err := strconv.ParseUint(m, 8, 32)
		if err != nil || v > 0o777 {
			return fatal("invalid write-kubeconfig-mode %q: expected an octal file mode like 0644", m)
		}
		mode = os.FileMode(v)
	}
	if err := os.MkdirAll(filepath.Dir(kubeconfig), 0o755); err != nil {
		return err
	}
	// Like k3s: the server address is this host's loopback, which only
	// works on the server itself; whoever copies the file must rewrite it.
	return writeFile(kubeconfig, kubeconfigYAML("https://127.0.0.1:"+localPort(localURL), cp), mode)
}

func localPort(u string) string {
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(u, "https://"))
	return port
}

func kubeconfigYAML(server string, cp *cpfile.ControlPlane) []byte {
	return kubeconfigFor(server, cp.CAPEM, cp.CertPEM, cp.KeyPEM)
}

// kubeconfigFor is a kubeconfig with client-certificate credentials, in the
// layout k3s writes.
func kubeconfigFor(server, caPEM, certPEM, keyPEM string) []byte {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	return fmt.Appendf(nil, `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: %s
    server: %s
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: %s
    client-key-data: %s
`, b64(caPEM), server, b64(certPEM), b64(keyPEM))
}

// writeFile replaces path atomically with the given mode (not filtered by
// the umask, unlike os.WriteFile).
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// notifyReady tells the service manager on sock the node is up (Type=notify).
func notifyReady(sock string, log *logger) {
	if sock == "" {
		return
	}
	c, err := net.Dial("unixgram", sock)
	if err != nil {
		log.warnf("sd_notify: %v", err)
		return
	}
	defer c.Close()
	if _, err := c.Write([]byte("READY=1")); err != nil {
		log.warnf("sd_notify: %v", err)
	}
}
