// Package testrack starts real OpenSSH test hosts on this machine for rack's
// tests: each host is an sshd in its own network namespace (on a shared
// bridge, 198.18.0.0/16) and its own mount namespace (private tmpfs over
// the paths an install writes), so tests drive real ssh, sftp and sudo
// against machines that cannot see each other's files.
//
// It needs root, iproute2, util-linux (nsenter, unshare), openssh-server
// and sudo. New skips a test when they are missing, or fails it when the
// environment sets RACK_TEST_REQUIRE_ROOT=1 (CI).
//
// Hosts of every process on the machine share one registry under
// /run/rack-testrack, guarded by a flock: names and addresses never collide
// between concurrently running test packages, and hosts left behind by a
// crashed process are removed by the next Start.
package testrack

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/homelab/rack/internal/testenv"

	"golang.org/x/crypto/ssh"
)

// Rack is a set of running test hosts and the client-side files to reach
// them. All hosts accept both client keys for all Users.
type Rack struct {
	// ID identifies the rack in the machine-wide registry (see Remove).
	ID    string
	Hosts []*Host
	// Dir holds the client-side files below.
	Dir string
	// ClientKey is the path of an unencrypted ed25519 private key (0600;
	// the public key is beside it with ".pub").
	ClientKey string
	// EncryptedClientKey is the path of an ed25519 private key encrypted
	// with KeyPassphrase (OpenSSH format, bcrypt KDF).
	EncryptedClientKey string
	KeyPassphrase      string
	// SudoPassword is PasswordSudoUser's password on every host of this
	// rack. It is generated per rack and valid only inside its hosts.
	SudoPassword string
	// KnownHosts is the path of a known_hosts file with every host's key at
	// Start, by address. It is not updated by RotateHostKey.
	KnownHosts string
	// Spare are addresses on the bridge reserved for this rack but held by
	// no host (Options.Spare): free for what the test hands out itself,
	// such as MetalLB's address pool, without colliding with another rack.
	Spare []string

	spareDirs      []string
	clientSigner   ssh.Signer
	authorizedKeys []byte
	ownDir         bool
	logf           func(string, ...any)
	closeOnce      sync.Once
	closeErr       error
}

// Options configure Start.
type Options struct {
	// Hosts is the number of hosts (at least 1).
	Hosts int
	// Dir receives the client keys and known_hosts. Empty: a new temporary
	// directory that Close removes.
	Dir string
	// Persistent hosts belong to no process: they stay up when the process
	// exits and only Remove, Clean(all) or Close deletes them. For humans
	// (scripts/testrack), not tests.
	Persistent bool
	// Pi lists indexes into Hosts that MakePi(PiModel) turns into Pis.
	Pi      []int
	PiModel string
	// Spare reserves this many more addresses on the bridge, held by no
	// host (Rack.Spare).
	Spare int
	// Logf receives progress notes (stale hosts removed, timings); nil
	// discards them.
	Logf func(format string, args ...any)
}

// Option changes the Options New uses.
type Option func(*Options)

// WithPi makes the hosts at these indexes Raspberry Pis (DefaultPiModel).
func WithPi(indexes ...int) Option {
	return func(o *Options) { o.Pi = append(o.Pi, indexes...) }
}

// WithSpare reserves n addresses on the bridge that no host holds
// (Rack.Spare), for a MetalLB pool.
func WithSpare(n int) Option {
	return func(o *Options) { o.Spare = n }
}

// WithOptions edits the Options directly, for anything without its own Option.
func WithOptions(f func(*Options)) Option { return Option(f) }

// New starts a rack of n hosts for a test and stops it in t.Cleanup, also
// when the test fails. It skips the test when the machine cannot host a
// rack (not root, tools missing), unless RACK_TEST_REQUIRE_ROOT=1, where it
// fails it instead.
func New(t testing.TB, n int, opts ...Option) *Rack {
	t.Helper()
	if err := Supported(); err != nil {
		testenv.SkipOrFail(t, "%v", err)
	}
	o := Options{Hosts: n, Dir: t.TempDir(), Logf: t.Logf}
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("testrack: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("testrack: %v", err)
		}
	})
	return r
}

// Supported returns nil when this machine can host a rack, or an error that
// says in one line what is missing.
func Supported() error {
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Errorf("%w: test hosts need root (running as uid %d)", errUnsupported, uid)
	}
	for _, p := range []struct{ path, pkg string }{
		{sshdPath, "openssh-server"},
		{sftpServerPath, "openssh-sftp-server"},
	} {
		if _, err := os.Stat(p.path); err != nil {
			return fmt.Errorf("%w: %s missing (apt-get install %s)", errUnsupported, p.path, p.pkg)
		}
	}
	for _, p := range []struct{ cmd, pkg string }{
		{"ip", "iproute2"}, {"nsenter", "util-linux"}, {"unshare", "util-linux"},
		{"mount", "mount"}, {"useradd", "passwd"}, {"visudo", "sudo"}, {"sudo", "sudo"},
		{"perl", "perl-base"}, {"awk", "mawk"},
	} {
		if _, err := exec.LookPath(p.cmd); err != nil {
			return fmt.Errorf("%w: %s missing (apt-get install %s)", errUnsupported, p.cmd, p.pkg)
		}
	}
	return nil
}

// errUnsupported marks reasons the machine cannot host a rack at all, which
// New turns into a skip.
var errUnsupported = errors.New("testrack: unsupported machine")

// IsUnsupported reports whether err from Start means the machine cannot
// host a rack at all (as opposed to a failure while starting one).
func IsUnsupported(err error) bool { return errors.Is(err, errUnsupported) }

// Start starts a rack. Close stops it; on error Start has already cleaned up.
func Start(ctx context.Context, o Options) (_ *Rack, err error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	if o.Hosts < 1 {
		return nil, fmt.Errorf("testrack: need at least one host, got %d", o.Hosts)
	}
	for _, i := range o.Pi {
		if i < 0 || i >= o.Hosts {
			return nil, fmt.Errorf("testrack: Pi index %d out of range [0,%d)", i, o.Hosts)
		}
	}
	began := time.Now()
	r := &Rack{ID: randomString(12), Dir: o.Dir, logf: o.Logf}
	if r.logf == nil {
		r.logf = func(string, ...any) {}
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, r.Close())
		}
	}()
	if r.Dir == "" {
		if r.Dir, err = os.MkdirTemp("", "testrack-"); err != nil {
			return r, err
		}
		r.ownDir = true
	} else if err := os.MkdirAll(r.Dir, 0o700); err != nil {
		return r, err
	}
	if err := r.writeClientFiles(); err != nil {
		return r, err
	}

	lock, err := lockMachine(ctx)
	if err != nil {
		return r, err
	}
	entries, err := func() ([]*entry, error) {
		defer lock.Unlock()
		if _, err := sweep(ctx, false, r.logf); err != nil {
			// A host we cannot remove is someone's problem, not this rack's:
			// its name stays reserved and Start picks others.
			r.logf("testrack: cleaning stale hosts: %v", err)
		}
		if err := ensureUsers(ctx); err != nil {
			return nil, err
		}
		if err := ensureMountPoints(); err != nil {
			return nil, err
		}
		if err := ensureBridge(ctx); err != nil {
			return nil, err
		}
		return reserve(o.Hosts+o.Spare, r.ID, o.Persistent)
	}()
	for i, e := range entries {
		if i >= o.Hosts {
			r.Spare = append(r.Spare, e.Addr)
			r.spareDirs = append(r.spareDirs, filepath.Join(hostsDir, e.Name))
			continue
		}
		r.Hosts = append(r.Hosts, newHost(r, e))
	}
	if err != nil {
		return r, err
	}

	shadow, err := hostShadow(ctx, r.SudoPassword)
	if err != nil {
		return r, err
	}
	// Hosts come up concurrently: most of the time is spent waiting for
	// processes, not computing.
	errs := make([]error, len(r.Hosts))
	var wg sync.WaitGroup
	for i, h := range r.Hosts {
		wg.Go(func() { errs[i] = h.setup(ctx, shadow) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return r, err
	}
	for _, i := range o.Pi {
		if err := r.Hosts[i].MakePi(o.PiModel); err != nil {
			return r, err
		}
	}
	if err := r.WriteKnownHosts(r.KnownHosts, false); err != nil {
		return r, err
	}
	r.logf("testrack: %d hosts up in %v (%s … %s)", len(r.Hosts), time.Since(began).Round(time.Millisecond),
		r.Hosts[0].Addr, r.Hosts[len(r.Hosts)-1].Addr)
	return r, nil
}

// ensureMountPoints creates the directories the hosts mount over, where
// this machine lacks them (a plain Debian has no /etc/rancher or
// /boot/firmware), and sshd's privilege separation directory, which only
// the machine's own ssh.service would otherwise create. Must hold the
// machine lock.
func ensureMountPoints() error {
	for _, d := range privateDirs {
		if err := os.MkdirAll(d.path, 0o755); err != nil {
			return err
		}
	}
	return os.MkdirAll("/run/sshd", 0o755)
}

// writeClientFiles generates the secrets and client keys.
func (r *Rack) writeClientFiles() error {
	r.KeyPassphrase = randomString(24)
	r.SudoPassword = randomString(24)
	r.ClientKey = filepath.Join(r.Dir, "id_ed25519")
	r.EncryptedClientKey = filepath.Join(r.Dir, "id_ed25519_encrypted")
	r.KnownHosts = filepath.Join(r.Dir, "known_hosts")
	var authorized bytes.Buffer
	for _, k := range []struct {
		path       string
		passphrase string
	}{{r.ClientKey, ""}, {r.EncryptedClientKey, r.KeyPassphrase}} {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		signer, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			return err
		}
		comment := "testrack-" + r.ID
		var block *pem.Block
		if k.passphrase == "" {
			block, err = ssh.MarshalPrivateKey(priv, comment)
			r.clientSigner = signer
		} else {
			block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, comment, []byte(k.passphrase))
		}
		if err != nil {
			return err
		}
		pub := ssh.MarshalAuthorizedKey(signer.PublicKey())
		pub = append(bytes.TrimSuffix(pub, []byte("\n")), []byte(" "+comment+"\n")...)
		if err := writeFileAtomic(k.path, pem.EncodeToMemory(block), 0o600); err != nil {
			return err
		}
		if err := writeFileAtomic(k.path+".pub", pub, 0o644); err != nil {
			return err
		}
		authorized.Write(pub)
	}
	r.authorizedKeys = authorized.Bytes()
	return nil
}

// ClientSigner is the unencrypted client key, for Go ssh clients.
func (r *Rack) ClientSigner() ssh.Signer { return r.clientSigner }

// WriteKnownHosts writes a known_hosts file with every host's current key,
// hashed (as with HashKnownHosts yes) or by plain address.
func (r *Rack) WriteKnownHosts(path string, hashed bool) error {
	var b bytes.Buffer
	for _, h := range r.Hosts {
		if hashed {
			b.WriteString(h.HashedKnownHostsLine())
		} else {
			b.WriteString(h.KnownHostsLine())
		}
		b.WriteByte('\n')
	}
	return writeFileAtomic(path, b.Bytes(), 0o600)
}

// Host returns the host with that name, or nil.
func (r *Rack) Host(name string) *Host {
	for _, h := range r.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// Close stops every host (and whatever runs in them) and removes their
// namespaces, links and registry entries, plus Dir when Start created it.
// It is safe to call more than once.
func (r *Rack) Close() error {
	r.closeOnce.Do(func() { r.closeErr = r.close() })
	return r.closeErr
}

func (r *Rack) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	errs := make([]error, len(r.Hosts))
	var wg sync.WaitGroup
	for i, h := range r.Hosts {
		wg.Go(func() { errs[i] = h.teardown(ctx) })
	}
	wg.Wait()
	lock, err := lockMachine(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for i, h := range r.Hosts {
		// A host that did not come down keeps its entry, so the next Start
		// (its owner gone by then) tries again instead of reusing the name.
		if errs[i] == nil {
			errs[i] = os.RemoveAll(h.dir)
		}
	}
	for _, d := range r.spareDirs {
		errs = append(errs, os.RemoveAll(d))
	}
	errs = append(errs, removeBridgeIfUnused(ctx))
	lock.Unlock()
	if r.ownDir {
		errs = append(errs, os.RemoveAll(r.Dir))
	}
	return errors.Join(errs...)
}

// Remove tears down the hosts of the rack with this ID, wherever they were
// started (scripts/testrack down). It returns the names removed.
func Remove(ctx context.Context, rackID string) ([]string, error) {
	lock, err := lockMachine(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	names, err := registeredNames()
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, name := range names {
		e, err := readEntry(name)
		if err != nil || e.RackID != rackID {
			continue
		}
		if err := teardownHost(ctx, name, e.Addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		removed = append(removed, name)
	}
	errs = append(errs, removeBridgeIfUnused(ctx))
	return removed, errors.Join(errs...)
}

// Clean removes hosts of processes that died without closing their rack,
// and leftovers the registry does not know; with all, also persistent hosts.
// Hosts of running processes are never touched. It returns the names removed.
func Clean(ctx context.Context, all bool, logf func(string, ...any)) ([]string, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	lock, err := lockMachine(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	return sweep(ctx, all, logf)
}
