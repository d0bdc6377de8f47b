package nodes

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/homelab/rack/internal/testenv"

	"golang.org/x/crypto/ssh"

	"github.com/homelab/rack/internal/testrack"
)

// env is a fake environment: tests never read (or leak into) the real one.
type env map[string]string

func (e env) get(k string) string { return e[k] }

// testOptions are fast-retrying options whose log and output tests can read.
func testOptions(e env) (Options, *testenv.Buffer, *testenv.Buffer) {
	logs, out := &testenv.Buffer{}, &testenv.Buffer{}
	return Options{
		Logger:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Output:         out,
		Getenv:         e.get,
		Prompt:         func(string) ([]byte, error) { return nil, errNoTTY },
		ConnectTimeout: 5 * time.Second,
		BackoffBase:    100 * time.Millisecond,
		BackoffMax:     time.Second,
	}, logs, out
}

func targetFor(r *testrack.Rack, h *testrack.Host, user string) Target {
	return Target{
		Name: h.Name, Address: h.Addr, Port: h.Port, User: user,
		IdentityFiles: []string{r.ClientKey},
		KnownHosts:    r.KnownHosts,
		HostKeyPolicy: PolicyStrict,
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustConnect(t *testing.T, ctx context.Context, tg Target, o Options) *Host {
	t.Helper()
	h, err := Connect(ctx, tg, o)
	if err != nil {
		t.Fatalf("connect %s: %v", tg, err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// writeKey writes a fresh unencrypted ed25519 key no host accepts.
func writeKey(t *testing.T) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "stranger")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "id_stranger")
	if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// argvScanner reads every process's argv on this machine (the test hosts
// share its PID namespace) until stopped, looking for a secret.
type argvScanner struct {
	secret []byte
	stop   chan struct{}
	done   chan struct{}
	scans  int
	hits   []string
}

func scanArgv(secret string) *argvScanner {
	s := &argvScanner{secret: []byte(secret), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			ents, _ := os.ReadDir("/proc")
			for _, e := range ents {
				if _, err := strconv.Atoi(e.Name()); err != nil {
					continue
				}
				b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
				if err == nil && bytes.Contains(b, s.secret) {
					s.hits = append(s.hits, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
				}
			}
			s.scans++
		}
	}()
	return s
}

// finish stops the scanner and returns its findings.
func (s *argvScanner) finish() (scans int, hits []string) {
	close(s.stop)
	<-s.done
	return s.scans, s.hits
}

// countProcs counts processes whose argv contains needle.
func countProcs(needle string) int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(b, []byte(needle)) {
			n++
		}
	}
	return n
}

// localShell runs a rendered command line with this machine's /bin/sh -c,
// in dir, and returns its stdout.
func localShell(dir, line string) (string, error) {
	cmd := exec.Command("/bin/sh", "-c", line)
	cmd.Dir = dir
	out, err := cmd.Output()
	return string(out), err
}
