// Command sampleweb is rack's own sample web server: the workload of the test
// rack's release-strategy tests, built into an image by internal/images.
//
// It answers every request with its version, which pod served it and how
// many application requests it has served, and it can be told to misbehave
// the ways a rollout must survive: start slowly, never become ready, answer
// slowly. On SIGTERM it turns unready, optionally waits, and drains the
// requests in flight before it exits.
//
// Endpoints:
//
//	/         {"app":"sampleweb","version":…,"host":…,"request":N}; ?delay=2s holds the answer
//	/healthz  200 once listening (liveness: depends on nothing)
//	/ready    200 when ready, 503 before (ready-delay, never-ready) and while draining
//	/stats    {"version":…,"served":N,"inFlight":M}: the counter of "/" requests,
//	          for shadow-traffic tests (probes and /stats are not counted)
//	/fetch    ?url=…[&insecure=1]: GETs url from inside the pod and answers
//	          {"status":…,"body":…}, to test pod-to-pod and pod-to-Service paths
//	/validate a validating admission webhook (AdmissionReview v1): it refuses
//	          objects labelled sampleweb.homelab/deny=true, allows the rest
//
// With -tls-listen (and -tls-cert, -tls-key: PEM files) it serves the same
// endpoints over HTTPS too, as an admission webhook must.
//
// Every flag has an environment variable (SAMPLEWEB_<FLAG>, upper case, - as _),
// so one image serves any test through the pod spec; flags win.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, signals()); err != nil {
		log.Printf("sampleweb: %v", err)
		os.Exit(1)
	}
}

func signals() <-chan os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	return ch
}

// config is the server's behaviour.
type config struct {
	listen        string
	tlsListen     string
	tlsCert       string
	tlsKey        string
	version       string
	startDelay    time.Duration // before listening at all
	readyDelay    time.Duration // listening, but /ready fails until then
	neverReady    bool
	shutdownDelay time.Duration // unready but still serving, after SIGTERM
	drainTimeout  time.Duration // longest wait for requests in flight
}

func parseConfig(args []string, env func(string) string) (config, error) {
	fs := flag.NewFlagSet("sampleweb", flag.ContinueOnError)
	var c config
	str := func(p *string, name, def, usage string) {
		if v := env(envName(name)); v != "" {
			def = v
		}
		fs.StringVar(p, name, def, usage)
	}
	var startDelay, readyDelay, shutdownDelay, drainTimeout, neverReady string
	str(&c.listen, "listen", ":8080", "address to listen on")
	str(&c.tlsListen, "tls-listen", "", "also serve HTTPS on this address")
	str(&c.tlsCert, "tls-cert", "", "PEM certificate file for -tls-listen")
	str(&c.tlsKey, "tls-key", "", "PEM key file for -tls-listen")
	str(&c.version, "version", "dev", "version to answer with")
	str(&startDelay, "start-delay", "0s", "wait this long before listening (a slow start)")
	str(&readyDelay, "ready-delay", "0s", "answer /ready with 503 for this long after listening")
	neverReady = env(envName("never-ready"))
	neverFlag := fs.Bool("never-ready", false, "never answer /ready with 200")
	str(&shutdownDelay, "shutdown-delay", "0s", "after SIGTERM, keep serving (unready) this long before draining")
	str(&drainTimeout, "drain-timeout", "30s", "longest wait for requests in flight after SIGTERM")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	var err error
	durs := []struct {
		name string
		s    string
		p    *time.Duration
	}{
		{"start-delay", startDelay, &c.startDelay},
		{"ready-delay", readyDelay, &c.readyDelay},
		{"shutdown-delay", shutdownDelay, &c.shutdownDelay},
		{"drain-timeout", drainTimeout, &c.drainTimeout},
	}
	for _, d := range durs {
		if *d.p, err = time.ParseDuration(d.s); err != nil {
			return c, fmt.Errorf("-%s: %w", d.name, err)
		}
	}
	// A bool flag (-never-ready), which the environment can turn on too.
	if neverReady != "" {
		if c.neverReady, err = strconv.ParseBool(neverReady); err != nil {
			return c, fmt.Errorf("%s: %w", envName("never-ready"), err)
		}
	}
	c.neverReady = c.neverReady || *neverFlag
	return c, nil
}

func envName(flagName string) string {
	return "SAMPLEWEB_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// server holds the state the handlers share.
type server struct {
	cfg       config
	host      string
	readyAt   time.Time
	draining  atomic.Bool
	served    atomic.Int64
	validated atomic.Int64
	inFlight  atomic.Int64
}

func (s *server) ready(now time.Time) bool {
	return !s.cfg.neverReady && !s.draining.Load() && !now.Before(s.readyAt)
}

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready(time.Now()) {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{
			"version":   s.cfg.version,
			"host":      s.host,
			"served":    s.served.Load(),
			"validated": s.validated.Load(),
			"inFlight":  s.inFlight.Load(),
		})
	})
	mux.HandleFunc("/validate", s.validate)
	mux.HandleFunc("/fetch", func(w http.ResponseWriter, r *http.Request) {
		target := r.URL.Query().Get("url")
		if target == "" {
			http.Error(w, "url is required", http.StatusBadRequest)
			return
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: r.URL.Query().Get("insecure") == "1"}}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Timeout: 5 * time.Second, Transport: tr}
		resp, err := hc.Get(target)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			writeJSON(w, map[string]any{"error": err.Error()})
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		writeJSON(w, map[string]any{"status": resp.StatusCode, "body": string(body)})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.inFlight.Add(1)
		defer s.inFlight.Add(-1)
		if d := r.URL.Query().Get("delay"); d != "" {
			dur, err := time.ParseDuration(d)
			if err != nil {
				http.Error(w, "delay: "+err.Error(), http.StatusBadRequest)
				return
			}
			// Not cut short by shutdown: a drained request is one that
			// completes.
			time.Sleep(dur)
		}
		n := s.served.Add(1)
		writeJSON(w, map[string]any{"app": "sampleweb", "version": s.cfg.version, "host": s.host, "request": n})
	})
	return mux
}

// DenyLabel makes /validate refuse an object.
const denyLabel = "sampleweb.homelab/deny"

// validate answers an AdmissionReview (admission.k8s.io/v1), reading only
// the fields it needs so the image stays free of Kubernetes modules.
func (s *server) validate(w http.ResponseWriter, r *http.Request) {
	var review struct {
		Request *struct {
			UID    string `json:"uid"`
			Object struct {
				Metadata struct {
					Name   string            `json:"name"`
					Labels map[string]string `json:"labels"`
				} `json:"metadata"`
			} `json:"object"`
		} `json:"request"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, "expected an AdmissionReview", http.StatusBadRequest)
		return
	}
	s.validated.Add(1)
	req := review.Request
	resp := map[string]any{"uid": req.UID, "allowed": true}
	if req.Object.Metadata.Labels[denyLabel] == "true" {
		resp["allowed"] = false
		resp["status"] = map[string]any{"code": 403, "message": fmt.Sprintf("sampleweb %s refuses %s: it is labelled %s=true", s.cfg.version, req.Object.Metadata.Name, denyLabel)}
	}
	writeJSON(w, map[string]any{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func run(args []string, out io.Writer, sigs <-chan os.Signal) error {
	cfg, err := parseConfig(args, os.Getenv)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	logf := func(format string, a ...any) {
		fmt.Fprintf(out, "%s sampleweb %s: %s\n", time.Now().UTC().Format(time.RFC3339Nano), cfg.version, fmt.Sprintf(format, a...))
	}
	if cfg.startDelay > 0 {
		logf("starting slowly: listening in %v", cfg.startDelay)
		select {
		case <-time.After(cfg.startDelay):
		case sig := <-sigs:
			logf("%v before listening; exiting", sig)
			return nil
		}
	}
	l, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	return serve(l, cfg, host, logf, sigs)
}

func serve(l net.Listener, cfg config, host string, logf func(string, ...any), sigs <-chan os.Signal) error {
	s := &server{cfg: cfg, host: host, readyAt: time.Now().Add(cfg.readyDelay)}
	srv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(l) }()
	logf("listening on %s (ready in %v, never-ready %v)", l.Addr(), cfg.readyDelay, cfg.neverReady)
	var tlsSrv *http.Server
	if cfg.tlsListen != "" {
		tl, err := net.Listen("tcp", cfg.tlsListen)
		if err != nil {
			srv.Close()
			return err
		}
		tlsSrv = &http.Server{Handler: srv.Handler, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- tlsSrv.ServeTLS(tl, cfg.tlsCert, cfg.tlsKey) }()
		logf("listening on %s (HTTPS)", tl.Addr())
	}
	select {
	case err := <-errc:
		return err
	case sig := <-sigs:
		s.draining.Store(true)
		logf("%v: unready; draining %d requests in flight after %v", sig, s.inFlight.Load(), cfg.shutdownDelay)
	}
	time.Sleep(cfg.shutdownDelay)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.drainTimeout)
	defer cancel()
	// Shutdown closes the listener and waits for active requests to finish.
	if tlsSrv != nil {
		if err := tlsSrv.Shutdown(ctx); err != nil {
			return fmt.Errorf("draining: %w", err)
		}
	}
	if err := srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("draining: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	logf("drained; served %d requests", s.served.Load())
	return nil
}
