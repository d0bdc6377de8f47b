package nodes

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/internal/testrack"
)

func TestAuthKeyFile(t *testing.T) {
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	for _, user := range testrack.Users {
		o, _, out := testOptions(env{})
		h := mustConnect(t, ctx, targetFor(r, r.Hosts[0], user), o)
		if err := h.Run(ctx, Sh("echo hello $(id -un)"), RunOptions{}); err != nil {
			t.Fatal(err)
		}
		if want := r.Hosts[0].Name + " | hello " + user + "\n"; out.String() != want {
			t.Errorf("output %q, want %q", out.String(), want)
		}
	}
}

func TestAuthEncryptedKey(t *testing.T) {
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	tg := targetFor(r, r.Hosts[0], testrack.SudoUser)
	tg.IdentityFiles = []string{r.EncryptedClientKey}

	t.Run("passphrase from RACK_SSH_PASSPHRASE", func(t *testing.T) {
		o, _, _ := testOptions(env{EnvPassphrase: r.KeyPassphrase})
		mustConnect(t, ctx, tg, o)
	})
	t.Run("no passphrase and no terminal", func(t *testing.T) {
		o, _, _ := testOptions(env{})
		_, err := Connect(ctx, tg, o)
		var ae *AuthError
		if !errors.As(err, &ae) || !ae.NoKey {
			t.Fatalf("want a no-usable-key AuthError, got %v", err)
		}
		for _, s := range []string{"no usable key", "encrypted; set RACK_SSH_PASSPHRASE", r.EncryptedClientKey} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("message lacks %q: %v", s, err)
			}
		}
	})
	t.Run("wrong passphrase", func(t *testing.T) {
		o, _, _ := testOptions(env{EnvPassphrase: "not-it"})
		_, err := Connect(ctx, tg, o)
		if err == nil || !strings.Contains(err.Error(), "wrong passphrase from RACK_SSH_PASSPHRASE") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("prompted once for many connections", func(t *testing.T) {
		var prompts atomic.Int32
		o, _, _ := testOptions(env{})
		o.Prompt = func(p string) ([]byte, error) {
			prompts.Add(1)
			return []byte(r.KeyPassphrase), nil
		}
		o.Credentials = NewCredentials(o.Getenv, o.Prompt)
		for range 3 {
			mustConnect(t, ctx, tg, o)
		}
		if n := prompts.Load(); n != 1 {
			t.Errorf("prompted %d times, want 1", n)
		}
	})
}

// serveAgent runs a real ssh-agent (x/crypto's keyring) on a unix socket.
func serveAgent(t *testing.T, keys ...any) string {
	t.Helper()
	kr := agent.NewKeyring()
	for _, k := range keys {
		if err := kr.Add(agent.AddedKey{PrivateKey: k}); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				agent.ServeAgent(kr, c)
			}()
		}
	}()
	return sock
}

func TestAuthAgent(t *testing.T) {
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	pem, err := os.ReadFile(r.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ssh.ParseRawPrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	sock := serveAgent(t, stranger, raw)

	tg := targetFor(r, r.Hosts[0], testrack.SudoUser)
	tg.IdentityFiles = []string{filepath.Join(t.TempDir(), "id_missing")} // only the agent can log in
	o, _, _ := testOptions(env{EnvAuthSock: sock})
	h := mustConnect(t, ctx, tg, o)
	if out, err := h.Output(ctx, Sh("id -un"), RunOptions{}); err != nil || string(out) != testrack.SudoUser+"\n" {
		t.Fatalf("id -un = %q, %v", out, err)
	}
}

func TestAuthNoUsableKey(t *testing.T) {
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	dir := t.TempDir()
	tg := targetFor(r, r.Hosts[0], testrack.RootUser)
	tg.IdentityFiles = []string{filepath.Join(dir, "id_ed25519"), filepath.Join(dir, "id_rsa")}
	o, _, _ := testOptions(env{})
	_, err := Connect(ctx, tg, o)
	var ae *AuthError
	if !errors.As(err, &ae) || !ae.NoKey || IsTransient(err) {
		t.Fatalf("want a non-transient no-usable-key AuthError, got %v", err)
	}
	want := "no usable key for root@" + r.Hosts[0].Addr + ":22 (tried: agent (SSH_AUTH_SOCK not set), " +
		filepath.Join(dir, "id_ed25519") + " (not found), " + filepath.Join(dir, "id_rsa") + " (not found))"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("message:\n%v\nlacks:\n%s", err, want)
	}
}

func TestAuthWrongKey(t *testing.T) {
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	tg := targetFor(r, r.Hosts[0], testrack.SudoUser)
	stranger := writeKey(t)
	tg.IdentityFiles = []string{stranger}
	_, strangerAgentKey, _ := ed25519.GenerateKey(rand.Reader)
	o, logs, _ := testOptions(env{EnvAuthSock: serveAgent(t, strangerAgentKey)})
	_, err := Connect(ctx, tg, o)
	var ae *AuthError
	if !errors.As(err, &ae) || ae.NoKey {
		t.Fatalf("want a permission-denied AuthError, got %v", err)
	}
	want := "permission denied for rackuser@" + r.Hosts[0].Addr + ":22 (tried: agent (1 key), " + stranger + ")"
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "authorized_keys") {
		t.Errorf("message:\n%v\nlacks:\n%s", err, want)
	}
	if strings.Contains(logs.String(), "retrying") {
		t.Errorf("an authentication failure was retried:\n%s", logs)
	}
}

func TestHostKeyStrictUnknown(t *testing.T) {
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	tg := targetFor(r, r.Hosts[0], testrack.RootUser)
	tg.KnownHosts = filepath.Join(t.TempDir(), "known_hosts") // does not exist
	o, logs, _ := testOptions(env{})
	_, err := Connect(ctx, tg, o)
	var hk *HostKeyError
	if !errors.As(err, &hk) || hk.Problem != HostKeyUnknown || IsTransient(err) {
		t.Fatalf("want HostKeyUnknown, got %v", err)
	}
	for _, s := range []string{r.Hosts[0].Fingerprint(), "accept-new", "ssh-keyscan"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("message lacks %q: %v", s, err)
		}
	}
	if _, err := os.Stat(tg.KnownHosts); !errors.Is(err, os.ErrNotExist) {
		t.Error("strict policy wrote known_hosts")
	}
	if strings.Contains(logs.String(), "retrying") {
		t.Error("a host key failure was retried")
	}
}

func TestHostKeyHashedKnownHosts(t *testing.T) {
	r := testrack.New(t, 2)
	ctx := testCtx(t)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := r.WriteKnownHosts(kh, true); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(kh)
	if !bytes.HasPrefix(b, []byte("|1|")) {
		t.Fatalf("known_hosts not hashed: %s", b)
	}
	for _, h := range r.Hosts {
		tg := targetFor(r, h, testrack.RootUser)
		tg.KnownHosts = kh
		o, _, _ := testOptions(env{})
		mustConnect(t, ctx, tg, o)
	}
}

func TestHostKeyAcceptNew(t *testing.T) {
	r := testrack.New(t, 2)
	ctx := testCtx(t)
	kh := filepath.Join(t.TempDir(), "ssh", "known_hosts")
	os.MkdirAll(filepath.Dir(kh), 0o700)
	os.WriteFile(kh, []byte("# kept\nother.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 0o644)
	for _, h := range r.Hosts {
		tg := targetFor(r, h, testrack.RootUser)
		tg.KnownHosts = kh
		tg.HostKeyPolicy = PolicyAcceptNew
		o, logs, _ := testOptions(env{})
		mustConnect(t, ctx, tg, o)
		if !strings.Contains(logs.String(), "recorded new host key") || !strings.Contains(logs.String(), h.Fingerprint()) {
			t.Errorf("logger did not say the key was recorded:\n%s", logs)
		}
	}
	fi, err := os.Stat(kh)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("known_hosts mode %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(kh)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	want := []string{"# kept", "other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		r.Hosts[0].KnownHostsLine(), r.Hosts[1].KnownHostsLine()}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("known_hosts:\n%s\nwant:\n%s", b, strings.Join(want, "\n"))
	}
	// Now known: strict accepts it, and nothing more is written.
	tg := targetFor(r, r.Hosts[0], testrack.RootUser)
	tg.KnownHosts = kh
	o, _, _ := testOptions(env{})
	mustConnect(t, ctx, tg, o)
	if b2, _ := os.ReadFile(kh); !bytes.Equal(b, b2) {
		t.Error("known_hosts changed on a known host")
	}
}

func TestHostKeyPinned(t *testing.T) {
	r := testrack.New(t, 2)
	ctx := testCtx(t)
	h := r.Hosts[0]
	t.Run("match, host not in known_hosts", func(t *testing.T) {
		tg := targetFor(r, h, testrack.RootUser)
		tg.KnownHosts = filepath.Join(t.TempDir(), "known_hosts")
		tg.HostKey = h.Fingerprint()
		o, _, _ := testOptions(env{})
		mustConnect(t, ctx, tg, o)
	})
	t.Run("match as a public key line", func(t *testing.T) {
		tg := targetFor(r, h, testrack.RootUser)
		tg.HostKey = string(ssh.MarshalAuthorizedKey(h.HostPublicKey()))
		o, _, _ := testOptions(env{})
		mustConnect(t, ctx, tg, o)
	})
	t.Run("mismatch, even though known_hosts agrees with the host", func(t *testing.T) {
		tg := targetFor(r, h, testrack.RootUser)
		tg.HostKey = r.Hosts[1].Fingerprint()
		tg.HostKeyPolicy = PolicyAcceptNew
		o, _, _ := testOptions(env{})
		_, err := Connect(ctx, tg, o)
		var hk *HostKeyError
		if !errors.As(err, &hk) || hk.Problem != HostKeyPinMismatch {
			t.Fatalf("want HostKeyPinMismatch, got %v", err)
		}
		if !strings.Contains(err.Error(), h.Fingerprint()) || !strings.Contains(err.Error(), r.Hosts[1].Fingerprint()) {
			t.Errorf("message lacks a fingerprint: %v", err)
		}
	})
}

func TestHostKeyChangedIsRefused(t *testing.T) {
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	h := r.Hosts[0]
	oldFP := h.Fingerprint()
	kh := filepath.Join(t.TempDir(), "known_hosts")
	// The host's line is not the first one, so the reported line number means something.
	line := h.HashedKnownHostsLine()
	if err := os.WriteFile(kh, []byte("# rack test\n"+line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.RotateHostKey(); err != nil {
		t.Fatal(err)
	}
	const marker = "/var/lib/rancher/changed-key-marker"
	for _, policy := range []string{PolicyStrict, PolicyAcceptNew} {
		for _, pin := range []string{"", h.Fingerprint()} {
			tg := targetFor(r, h, testrack.RootUser)
			tg.KnownHosts, tg.HostKeyPolicy, tg.HostKey = kh, policy, pin
			o, _, _ := testOptions(env{})
			var ran atomic.Bool
			res := FanOut(ctx, []Target{tg}, FanOutOptions{Connect: o}, func(ctx context.Context, host *Host) error {
				ran.Store(true)
				return host.Run(ctx, Sh(`touch -- "$1"`, marker), RunOptions{})
			})
			err := res[0].Err
			var hk *HostKeyError
			if !errors.As(err, &hk) || hk.Problem != HostKeyChanged {
				t.Fatalf("policy %s pin %q: want HostKeyChanged, got %v", policy, pin, err)
			}
			if ran.Load() {
				t.Fatal("the step ran on a host with a changed key")
			}
			if len(hk.Want) != 1 || hk.Want[0].File != kh || hk.Want[0].Line != 2 {
				t.Errorf("Want = %+v, want %s:2", hk.Want, kh)
			}
			for _, s := range []string{oldFP, h.Fingerprint(), kh + ":2", "CHANGED"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("message lacks %q: %v", s, err)
				}
			}
		}
	}
	if exists, err := h.FileExists(marker); err != nil || exists {
		t.Fatalf("marker exists=%v (%v): a command ran despite the changed key", exists, err)
	}
	if b, _ := os.ReadFile(kh); string(b) != "# rack test\n"+line+"\n" {
		t.Errorf("known_hosts was modified:\n%s", b)
	}
}

func TestBastion(t *testing.T) {
	r := testrack.New(t, 2)
	ctx := testCtx(t)
	jump, dest := r.Hosts[0], r.Hosts[1]
	tg := targetFor(r, dest, testrack.SudoUser)
	tg.Bastion = testrack.SudoUser + "@" + net.JoinHostPort(jump.Addr, "22")
	o, _, _ := testOptions(env{})
	h := mustConnect(t, ctx, tg, o)
	out, err := h.Output(ctx, Sh(`echo "$SSH_CONNECTION"; hostname`), RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	// SSH_CONNECTION is "client_ip client_port server_ip server_port": the
	// client is the bastion, so the hop really happened.
	if len(f) != 5 || f[0] != jump.Addr || f[2] != dest.Addr || f[4] != dest.Name {
		t.Fatalf("through the bastion: %q", out)
	}

	t.Run("bastion host key verified too", func(t *testing.T) {
		kh := filepath.Join(t.TempDir(), "known_hosts")
		os.WriteFile(kh, []byte(dest.KnownHostsLine()+"\n"), 0o600) // knows only the destination
		tg := tg
		tg.KnownHosts = kh
		o, _, _ := testOptions(env{})
		_, err := Connect(ctx, tg, o)
		var hk *HostKeyError
		if !errors.As(err, &hk) || hk.Problem != HostKeyUnknown || !strings.Contains(hk.Addr, jump.Addr) {
			t.Fatalf("want the bastion's key refused, got %v", err)
		}
	})
}

func TestConnectRetriesUntilSSHDIsBack(t *testing.T) {
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	host := r.Hosts[0]
	if err := host.StopSSHD(); err != nil {
		t.Fatal(err)
	}
	o, logs, _ := testOptions(env{})
	o.Attempts = 10
	o.BackoffBase = 200 * time.Millisecond
	done := make(chan error, 1)
	go func() {
		h, err := Connect(ctx, targetFor(r, host, testrack.RootUser), o)
		if err == nil {
			err = h.Run(ctx, Sh("true"), RunOptions{})
			h.Close()
		}
		done <- err
	}()
	// "The host reboots": sshd comes back after the first refusals.
	testenv.WaitFor(t, testenv.Within(t, 20*time.Second), "a refused attempt", func() (bool, string) { return strings.Contains(logs.String(), "connect failed, retrying"), "" })
	if err := host.StartSSHD(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("connect did not survive the restart: %v\n%s", err, logs)
	}
}

func TestConnectTimeout(t *testing.T) {
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	host := r.Hosts[0]
	// A frozen sshd accepts TCP (the kernel does) but never says hello.
	pid := host.SSHDPid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	o, _, _ := testOptions(env{})
	o.ConnectTimeout = 300 * time.Millisecond
	o.Attempts = 2
	_, err := Connect(ctx, targetFor(r, host, testrack.RootUser), o)
	var ce *ConnectError
	if !errors.As(err, &ce) || ce.Attempts != 2 || !strings.Contains(err.Error(), "timed out after 2 attempts") {
		t.Fatalf("want a timed-out ConnectError after 2 attempts, got %v", err)
	}
}

// TestKeepAlive runs keepAlive against an in-process SSH server that answers
// keepalive@openssh.com, and one that has gone silent.
func TestKeepAlive(t *testing.T) {
	for _, answer := range []bool{true, false} {
		client, requests := pipeServer(t, answer)
		h := &Host{opts: Options{KeepAlive: 50 * time.Millisecond, KeepAliveMissed: 2}.withDefaults()}
		h.log = h.opts.Logger
		stop := make(chan struct{})
		go h.keepAlive(client, stop)
		closed := make(chan struct{})
		go func() { client.Wait(); close(closed) }()
		select {
		case <-closed:
			if answer {
				t.Fatal("keepalive closed a connection whose server answers")
			}
		case <-time.After(time.Second):
			if !answer {
				t.Fatal("keepalive kept a silent connection open")
			}
		}
		close(stop)
		client.Close()
		// x/crypto sends one global request at a time, so a silent server
		// sees just the first; the misses are counted by timeouts.
		if n := requests.Load(); n < 1 || (answer && n < 5) {
			t.Errorf("answer=%v: the server saw %d keepalives", answer, n)
		}
	}
}

// pipeServer connects an ssh.Client to an in-process server over a pipe.
func pipeServer(t *testing.T, answer bool) (*ssh.Client, *atomic.Int32) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	cfg.AddHostKey(signer)
	// Loopback TCP, not net.Pipe: both sides write their version first,
	// which an unbuffered pipe deadlocks on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	c1, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	go func() {
		_, chans, reqs, err := ssh.NewServerConn(c2, cfg)
		if err != nil {
			return
		}
		go func() {
			for range chans {
			}
		}()
		for r := range reqs {
			if r.Type == "keepalive@openssh.com" {
				n.Add(1)
				if answer {
					r.Reply(false, nil) // what OpenSSH answers
				}
			}
		}
	}()
	cc, chans, reqs, err := ssh.NewClientConn(c1, "pipe", &ssh.ClientConfig{User: "x",
		HostKeyCallback: ssh.FixedHostKey(signer.PublicKey())})
	if err != nil {
		t.Fatal(err)
	}
	client := ssh.NewClient(cc, chans, reqs)
	t.Cleanup(func() { client.Close() })
	return client, &n
}

func TestHostKeyAcceptNewConcurrent(t *testing.T) {
	r := testrack.New(t, 6)
	ctx := testCtx(t)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	var targets []Target
	for _, h := range r.Hosts {
		tg := targetFor(r, h, testrack.RootUser)
		tg.KnownHosts, tg.HostKeyPolicy = kh, PolicyAcceptNew
		targets = append(targets, tg)
	}
	o, _, _ := testOptions(env{})
	noop := func(context.Context, *Host) error { return nil }
	if err := Errors(FanOut(ctx, targets, FanOutOptions{Connect: o}, noop)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(kh)
	for _, h := range r.Hosts {
		if n := strings.Count(string(b), h.KnownHostsLine()+"\n"); n != 1 {
			t.Errorf("%s recorded %d times (parallel writers lost or doubled an update):\n%s", h.Name, n, b)
		}
	}
	for i := range targets {
		targets[i].HostKeyPolicy = PolicyStrict
	}
	if err := Errors(FanOut(ctx, targets, FanOutOptions{Connect: o}, noop)); err != nil {
		t.Fatal(err)
	}
}
