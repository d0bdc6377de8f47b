package nodes

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/homelab/rack/internal/atomicfile"
)

// hostKeyVerifier checks one host's key against the pin and known_hosts and,
// under accept-new, records a first-seen key.
type hostKeyVerifier struct {
	node   string
	addr   string // host:port as dialled; the known_hosts lookup key
	file   string
	policy string
	pin    string
	log    *slog.Logger
}

// loadKnownHosts parses the file; a missing file is an empty one.
func loadKnownHosts(file string) (ssh.HostKeyCallback, error) {
	if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
		return func(string, net.Addr, ssh.PublicKey) error { return &knownhosts.KeyError{} }, nil
	}
	cb, err := knownhosts.New(file)
	if err != nil {
		return nil, fmt.Errorf("known_hosts: %w", err)
	}
	return cb, nil
}

// probeKey is a key no host has; checking it lists the keys a host is known by.
var probeKey = func() ssh.PublicKey {
	k, _ := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	return k
}()

// algorithms orders host key algorithms so the server presents a key type we
// already know (as OpenSSH does); otherwise a host known by its ed25519 key
// that offers ecdsa first would look like a changed key.
func (v *hostKeyVerifier) algorithms() []string {
	preferred := []string{ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	var known []string
	if _, keyType := parsePin(v.pin); keyType != "" {
		known = append(known, algosForKeyType(keyType)...)
	}
	if cb, err := loadKnownHosts(v.file); err == nil {
		var ke *knownhosts.KeyError
		if err := cb(v.addr, dummyAddr(v.addr), probeKey); errors.As(err, &ke) {
			for _, w := range ke.Want {
				known = append(known, algosForKeyType(w.Key.Type())...)
			}
		}
	}
	out := make([]string, 0, len(preferred)+len(known))
	for _, a := range append(known, preferred...) {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

func algosForKeyType(t string) []string {
	if t == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	}
	return []string{t}
}

func dummyAddr(hostport string) net.Addr {
	if a, err := net.ResolveTCPAddr("tcp", hostport); err == nil {
		return a
	}
	return &net.TCPAddr{IP: net.IPv4zero, Port: 22}
}

// check is the ssh.HostKeyCallback. A changed or revoked key is refused
// under every policy; it runs before authentication, so nothing reaches the
// host.
func (v *hostKeyVerifier) check(_ string, remote net.Addr, key ssh.PublicKey) error {
	got := ssh.FingerprintSHA256(key)
	fail := func(p HostKeyProblem) *HostKeyError {
		return &HostKeyError{Node: v.node, Addr: v.addr, Problem: p, Got: got, KnownHosts: v.file}
	}
	pinFP, _ := parsePin(v.pin)
	if pinFP != "" && !equalFingerprint(pinFP, got) {
		e := fail(HostKeyPinMismatch)
		e.Pinned = v.pin
		return e
	}
	err := v.lookup(remote, key)
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) || len(ke.Want) > 0 {
		return v.refusal(err, fail)
	}
	// The host is unknown to known_hosts.
	switch {
	case v.policy == PolicyAcceptNew:
		return v.record(remote, key, fail)
	case pinFP != "":
		return nil // the pinned fingerprint is the trust anchor
	default:
		return fail(HostKeyUnknown)
	}
}

func (v *hostKeyVerifier) lookup(remote net.Addr, key ssh.PublicKey) error {
	cb, err := loadKnownHosts(v.file)
	if err != nil {
		return err
	}
	return cb(v.addr, remote, key)
}

// refusal maps a known_hosts verdict (nil, mismatch, revoked, parse error).
func (v *hostKeyVerifier) refusal(err error, fail func(HostKeyProblem) *HostKeyError) error {
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ke):
		e := fail(HostKeyChanged)
		for _, w := range ke.Want {
			e.Want = append(e.Want, KnownKeyRef{Fingerprint: ssh.FingerprintSHA256(w.Key), File: w.Filename, Line: w.Line})
		}
		return e
	case errors.As(err, &re):
		return fail(HostKeyRevoked)
	default:
		return fmt.Errorf("%s: checking host key of %s: %w", v.node, v.addr, err)
	}
}

// record appends a first-seen key to known_hosts (accept-new). The check is
// repeated under a lock because nodes connect in parallel and another one may
// have written the file meanwhile.
func (v *hostKeyVerifier) record(remote net.Addr, key ssh.PublicKey, fail func(HostKeyProblem) *HostKeyError) error {
	file := v.file
	if real, err := filepath.EvalSymlinks(file); err == nil {
		file = real // keep a dotfiles symlink a symlink
	}
	dir := filepath.Dir(file)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%s: recording host key: %w", v.node, err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return fmt.Errorf("%s: recording host key: %w", v.node, err)
	}
	defer unlock()

	err = v.lookup(remote, key)
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) || len(ke.Want) > 0 {
		return v.refusal(err, fail)
	}
	old, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: recording host key: %w", v.node, err)
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		old = append(old, '\n')
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(v.addr)}, key)
	if err := atomicfile.Write(file, append(old, line+"\n"...), 0o600); err != nil {
		return fmt.Errorf("%s: recording host key: %w", v.node, err)
	}
	v.log.Info("recorded new host key (hostKeyPolicy accept-new)", "node", v.node, "addr", v.addr,
		"fingerprint", ssh.FingerprintSHA256(key), "file", v.file)
	return nil
}

// lockDir takes an exclusive flock on a directory: it serialises known_hosts
// updates across goroutines and rack processes without leaving a lock file.
func lockDir(dir string) (func(), error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
