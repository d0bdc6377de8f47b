package nodes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/homelab/rack/inventory"
)

func boolPtr(b bool) *bool { return &b }

func TestResolveOrder(t *testing.T) {
	home := t.TempDir()
	cfgPath := filepath.Join(home, "ssh_config")
	cfg := `
Host pinemaster
  HostName 10.9.9.9
  User cfguser
  Port 2222
  IdentityFile ~/.ssh/pine_key
  ProxyJump jump@gw.example:2200

Host 192.168.1.107
  User byaddr
  IdentityFile %d/keys/%r-%h

Host *
  UserKnownHostsFile ~/.ssh/kh_from_config
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r := Resolver{Home: home, SSHConfig: cfgPath, User: "localme"}
	defaultKeys := []string{filepath.Join(home, ".ssh/id_ed25519"), filepath.Join(home, ".ssh/id_ecdsa"), filepath.Join(home, ".ssh/id_rsa")}

	tests := []struct {
		name string
		node inventory.Node
		want Target
	}{
		{
			name: "ssh_config by name fills what the inventory leaves out",
			node: inventory.Node{Name: "pinemaster", Address: "192.168.1.101"},
			want: Target{Name: "pinemaster", Address: "192.168.1.101", Port: 2222, User: "cfguser",
				IdentityFiles: []string{filepath.Join(home, ".ssh/pine_key")},
				KnownHosts:    filepath.Join(home, ".ssh/kh_from_config"), HostKeyPolicy: PolicyStrict,
				Sudo: boolPtr(true), Bastion: "jump@gw.example:2200", Jumps: []Target{{Name: "pinemaster (bastion 1: gw.example)",
					Address: "gw.example", Port: 2200, User: "jump", IdentityFiles: []string{filepath.Join(home, ".ssh/pine_key")},
					KnownHosts: filepath.Join(home, ".ssh/kh_from_config"), HostKeyPolicy: PolicyStrict}}},
		},
		{
			name: "inventory beats ssh_config",
			node: inventory.Node{Name: "pinemaster", Address: "192.168.1.101", HostKey: "SHA256:abc",
				SSH: inventory.SSH{User: "pi", Port: 22, IdentityFile: "~/.ssh/inv_key", KnownHosts: "/etc/kh",
					HostKeyPolicy: PolicyAcceptNew, Sudo: boolPtr(false), Bastion: "b@bastion:22"}},
			want: Target{Name: "pinemaster", Address: "192.168.1.101", Port: 22, User: "pi",
				IdentityFiles: []string{filepath.Join(home, ".ssh/inv_key")}, KnownHosts: "/etc/kh",
				HostKeyPolicy: PolicyAcceptNew, HostKey: "SHA256:abc", Sudo: boolPtr(false), Bastion: "b@bastion:22",
				Jumps: []Target{{Name: "pinemaster (bastion 1: bastion)", Address: "bastion", Port: 22, User: "b",
					IdentityFiles: []string{filepath.Join(home, ".ssh/inv_key")}, KnownHosts: "/etc/kh", HostKeyPolicy: PolicyAcceptNew}}},
		},
		{
			name: "ssh_config looked up by address when the name has no entry; tokens expanded",
			node: inventory.Node{Name: "potato-7", Address: "192.168.1.107"},
			want: Target{Name: "potato-7", Address: "192.168.1.107", Port: 22, User: "byaddr",
				IdentityFiles: []string{filepath.Join(home, "keys/byaddr-192.168.1.107")},
				KnownHosts:    filepath.Join(home, ".ssh/kh_from_config"), HostKeyPolicy: PolicyStrict, Sudo: boolPtr(true)},
		},
		{
			name: "no address: HostName from ssh_config",
			node: inventory.Node{Name: "pinemaster"},
			want: Target{Name: "pinemaster", Address: "10.9.9.9", Port: 2222, User: "cfguser",
				IdentityFiles: []string{filepath.Join(home, ".ssh/pine_key")},
				KnownHosts:    filepath.Join(home, ".ssh/kh_from_config"), HostKeyPolicy: PolicyStrict,
				Sudo: boolPtr(true), Bastion: "jump@gw.example:2200", Jumps: []Target{{Name: "pinemaster (bastion 1: gw.example)",
					Address: "gw.example", Port: 2200, User: "jump", IdentityFiles: []string{filepath.Join(home, ".ssh/pine_key")},
					KnownHosts: filepath.Join(home, ".ssh/kh_from_config"), HostKeyPolicy: PolicyStrict}}},
		},
		{
			name: "root needs no sudo by default",
			node: inventory.Node{Name: "other", Address: "10.0.0.5", SSH: inventory.SSH{User: "root"}},
			want: Target{Name: "other", Address: "10.0.0.5", Port: 22, User: "root", IdentityFiles: defaultKeys,
				KnownHosts: filepath.Join(home, ".ssh/kh_from_config"), HostKeyPolicy: PolicyStrict, Sudo: boolPtr(false)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.Resolve(tt.node)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v (sudo %v)\nwant %+v (sudo %v)", got, *got.Sudo, tt.want, *tt.want.Sudo)
			}
		})
	}
}

func TestResolveDefaults(t *testing.T) {
	home := t.TempDir()
	r := Resolver{Home: home, User: "alice"} // no ~/.ssh/config at all
	got, err := r.Resolve(inventory.Node{Name: "n1", Address: "10.1.1.1"})
	if err != nil {
		t.Fatal(err)
	}
	want := Target{Name: "n1", Address: "10.1.1.1", Port: 22, User: "alice",
		IdentityFiles: []string{filepath.Join(home, ".ssh/id_ed25519"), filepath.Join(home, ".ssh/id_ecdsa"), filepath.Join(home, ".ssh/id_rsa")},
		KnownHosts:    filepath.Join(home, ".ssh/known_hosts"), HostKeyPolicy: PolicyStrict, Sudo: boolPtr(true)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if !got.UseSudo() || (Target{User: "root", Sudo: boolPtr(true)}).UseSudo() {
		t.Error("UseSudo: want true for alice, false for root")
	}
}

func TestResolveBrokenConfig(t *testing.T) {
	home := t.TempDir()
	node := inventory.Node{Name: "a", Address: "1.2.3.4"}
	// An explicitly named config that is missing is a mistake; a default
	// ~/.ssh/config that is missing is normal.
	if _, err := (Resolver{Home: home, SSHConfig: filepath.Join(home, "missing")}).Resolve(node); err == nil {
		t.Error("an explicitly named but missing ssh config must be reported")
	}
	if _, err := (Resolver{Home: home}).Resolve(node); err != nil {
		t.Errorf("no ~/.ssh/config: %v", err)
	}
	// A config ssh_config cannot parse is reported, and Connect refuses to
	// guess: it returns the problem before dialling anything.
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte("Host a\nInclude /nonexistent/[\n"), 0o600)
	tg, err := (Resolver{Home: home}).Resolve(node)
	if err == nil || !strings.Contains(err.Error(), "Include") {
		t.Fatalf("broken config: %v", err)
	}
	tg.resolveErr = err
	if _, cerr := Connect(context.Background(), tg, Options{}); cerr == nil || !strings.Contains(cerr.Error(), "a: ssh config") {
		t.Errorf("Connect with a broken config: %v", cerr)
	}
}

// ProxyJump hops are resolved like OpenSSH does: an alias gets its own
// HostName, User, Port, IdentityFile and ProxyJump from ~/.ssh/config, and a
// node address that is a Host alias is dialled at its HostName.
func TestResolveJumpsThroughSSHConfig(t *testing.T) {
	home := t.TempDir()
	cfgPath := filepath.Join(home, "ssh_config")
	cfg := `
Host gw
  HostName 203.0.113.9
  User jumper
  Port 2201
  IdentityFile ~/.ssh/gw_key
  ProxyJump outer

Host outer
  HostName 198.51.100.1
  User edge

Host pi-alias
  HostName 10.20.30.40
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r := Resolver{Home: home, SSHConfig: cfgPath, User: "me"}
	got, err := r.Resolve(inventory.Node{Name: "n1", Address: "pi-alias", SSH: inventory.SSH{User: "pi", Bastion: "gw,admin@[fd00::1]:2222"}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Address != "10.20.30.40" {
		t.Errorf("a node address that is a Host alias: dialled %q, want its HostName", got.Address)
	}
	type hop struct {
		addr, user string
		port       int
		keys       []string
	}
	var hops []hop
	for _, j := range got.Jumps {
		hops = append(hops, hop{j.Address, j.User, j.Port, j.IdentityFiles})
	}
	defKeys := got.IdentityFiles
	want := []hop{
		{"198.51.100.1", "edge", 22, defKeys},
		{"203.0.113.9", "jumper", 2201, []string{filepath.Join(home, ".ssh/gw_key")}},
		{"fd00::1", "admin", 2222, defKeys},
	}
	if !reflect.DeepEqual(hops, want) {
		t.Errorf("jumps\n  %+v\nwant\n  %+v", hops, want)
	}
	loop := filepath.Join(home, "loop_config")
	os.WriteFile(loop, []byte("Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n"), 0o600)
	if _, err := (Resolver{Home: home, SSHConfig: loop}).Resolve(inventory.Node{Name: "x", Address: "10.0.0.1", SSH: inventory.SSH{Bastion: "a"}}); err == nil || !strings.Contains(err.Error(), "deeper than") {
		t.Errorf("a ProxyJump loop: %v", err)
	}
	hand, err := Target{Name: "n", User: "pi", Bastion: "a@b:1, c", IdentityFiles: []string{"k"}, KnownHosts: "kh"}.hops()
	if err != nil || len(hand) != 2 || hand[0].User != "a" || hand[1].User != "pi" || hand[1].Port != 22 || hand[1].KnownHosts != "kh" {
		t.Errorf("hops of a hand-built target = %+v, %v", hand, err)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestIsTransient(t *testing.T) {
	opErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
	}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"refused", opErr(syscall.ECONNREFUSED), true},
		{"reset", opErr(syscall.ECONNRESET), true},
		{"no route (rebooting)", opErr(syscall.EHOSTUNREACH), true},
		{"timeout", &net.OpError{Op: "dial", Err: timeoutErr{}}, true},
		{"handshake EOF", fmt.Errorf("ssh: handshake failed: %w", io.EOF), true},
		{"sftp connection lost", fmt.Errorf("writing: %w", sftp.ErrSSHFxConnectionLost), true},
		{"session without exit status", &ssh.ExitMissingError{}, true},
		{"closed conn", fmt.Errorf("x: %w", net.ErrClosed), true},
		{"auth", &AuthError{Node: "n"}, false},
		{"auth wrapping EOF", &AuthError{Node: "n", Err: io.EOF}, false},
		{"host key", fmt.Errorf("ssh: handshake failed: %w", &HostKeyError{Problem: HostKeyChanged}), false},
		{"exit status", &ExitError{Status: 1}, false},
		{"sudo", &SudoError{}, false},
		{"cancelled", context.Canceled, false},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{"dns not found", &net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, false},
		{"permission", os.ErrPermission, false},
	}
	for _, tt := range tests {
		if got := IsTransient(tt.err); got != tt.want {
			t.Errorf("%s: IsTransient(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	base, max := 100*time.Millisecond, 1*time.Second
	tests := []struct {
		attempt int
		lo, hi  time.Duration
	}{
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{3, 200 * time.Millisecond, 400 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{5, 500 * time.Millisecond, time.Second}, // capped
		{50, 500 * time.Millisecond, time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			d := backoff(tt.attempt, base, max)
			if d < tt.lo || d >= tt.hi {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v)", tt.attempt, d, tt.lo, tt.hi)
			}
		}
	}
}

func TestErrorMessages(t *testing.T) {
	ce := &ConnectError{Node: "potato-7", Addr: "198.18.0.9:22", Attempts: 3,
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	if got, want := ce.Error(), "potato-7: connect 198.18.0.9:22: connection refused after 3 attempts"; got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	hk := &HostKeyError{Node: "n", Addr: "10.0.0.1:2222", Problem: HostKeyChanged, Got: "SHA256:new",
		Want: []KnownKeyRef{{Fingerprint: "SHA256:old", File: "/h/.ssh/known_hosts", Line: 7}}}
	for _, s := range []string{"CHANGED", "SHA256:old", "SHA256:new", "/h/.ssh/known_hosts:7", "ssh-keygen -R '[10.0.0.1]:2222'"} {
		if !strings.Contains(hk.Error(), s) {
			t.Errorf("changed-key message lacks %q: %s", s, hk.Error())
		}
	}
	ee := &ExitError{Node: "n", Cmd: "false", Status: 1, StderrTail: "one\nlast words\n"}
	if got := ee.Error(); got != `n: "false" exited with status 1: last words` {
		t.Errorf("ExitError = %q", got)
	}
}

func TestParsePin(t *testing.T) {
	key, _ := ssh.NewPublicKey(probeKey.(ssh.CryptoPublicKey).CryptoPublicKey())
	line := string(ssh.MarshalAuthorizedKey(key))
	fp := ssh.FingerprintSHA256(key)
	tests := []struct{ in, fp, typ string }{
		{fp, fp, ""},
		{strings.TrimPrefix(fp, "SHA256:"), fp, ""},
		{fp + "=", fp, ""},
		{line, fp, ssh.KeyAlgoED25519},
		{"", "", ""},
	}
	for _, tt := range tests {
		gotFP, gotType := parsePin(tt.in)
		if gotFP != tt.fp || gotType != tt.typ {
			t.Errorf("parsePin(%q) = %q %q, want %q %q", tt.in, gotFP, gotType, tt.fp, tt.typ)
		}
	}
}

func TestParseRemoteStat(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	got, err := parseRemoteStat(sum + "  /usr/local/bin/k3s\nroot root 755\n")
	if err != nil || got.sum != sum || got.owner != "root" || got.group != "root" || got.mode != 0o755 {
		t.Errorf("got %+v, %v", got, err)
	}
	for _, bad := range []string{"", "x\n", sum + " f\nroot root\n", sum + " f\nroot root 9z9\n"} {
		if _, err := parseRemoteStat(bad); err == nil {
			t.Errorf("parseRemoteStat(%q): want error", bad)
		}
	}
}

func TestLineWriter(t *testing.T) {
	var lines []string
	var raw bytes.Buffer
	w := &lineWriter{emit: func(s string) { lines = append(lines, s) }, tee: &raw}
	io.WriteString(w, "one\r\ntw")
	io.WriteString(w, "o\n\nthree")
	w.flush()
	want := []string{"one", "two", "", "three"}
	if !reflect.DeepEqual(lines, want) || raw.String() != "one\r\ntwo\n\nthree" {
		t.Errorf("lines = %q, raw = %q", lines, raw.String())
	}
	tb := &tailBuffer{max: 4}
	io.WriteString(tb, "abcdef")
	io.WriteString(tb, "gh")
	if tb.String() != "efgh" {
		t.Errorf("tail = %q", tb.String())
	}
}

func TestWriteSummary(t *testing.T) {
	var b bytes.Buffer
	WriteSummary(&b, []Result{
		{Node: "pinemaster", Duration: 1500 * time.Millisecond, BytesSent: 3 << 20},
		{Node: "potato-7", Duration: 2 * time.Second, Err: errors.New("potato-7: connect 198.18.0.9:22: connection refused after 3 attempts")},
		{Node: "late", Err: fmt.Errorf("late: %w (context canceled)", errSkipped)},
	})
	out := b.String()
	for _, s := range []string{"NODE", "pinemaster", "ok", "3.0 MiB", "potato-7", "FAILED", "connection refused after 3 attempts", "skipped", "1 of 3 nodes ok"} {
		if !strings.Contains(out, s) {
			t.Errorf("summary lacks %q:\n%s", s, out)
		}
	}
}

func TestLiveProgress(t *testing.T) {
	var b bytes.Buffer
	now := time.Unix(1000, 0)
	p := newLiveProgress(&b, func() (int, int) { return 60, 24 })
	p.now = func() time.Time { return now }
	p.Add("a")
	p.Add("bb")
	p.Start("a")
	p.Step("a", "upload k3s")
	now = now.Add(1500 * time.Millisecond)
	p.Line("a", "hello from a")
	p.Done("a", nil, 1500*time.Millisecond)
	p.Done("bb", errors.New("bb: boom"), time.Second)
	p.Finish()
	out := b.String()
	for _, s := range []string{"\x1b[2A", "\x1b[J", "a | hello from a\n", "upload k3s", "1.5s", "FAILED", "bb: boom"} {
		if !strings.Contains(out, s) {
			t.Errorf("live output lacks %q: %q", s, out)
		}
	}
	// Every drawn line fits the terminal.
	for _, l := range strings.Split(out, "\n") {
		plain := stripANSI(l)
		if len([]rune(plain)) > 60 {
			t.Errorf("line wider than the terminal: %q", plain)
		}
	}
	// Too many nodes for the screen: finished ones fold into a count.
	p2 := newLiveProgress(io.Discard, func() (int, int) { return 80, 5 })
	for i := range 10 {
		p2.Add(fmt.Sprint("n", i))
	}
	p2.Start("n3")
	p2.mu.Lock()
	rows := p2.rows(4)
	p2.mu.Unlock()
	if len(rows) != 2 || !strings.Contains(rows[1], "1 running, 9 waiting") {
		t.Errorf("folded rows = %q", rows)
	}
	p2.Finish()
}

func stripANSI(s string) string {
	var b strings.Builder
	in := false
	for _, r := range s {
		switch {
		case in:
			if r >= '@' && r <= '~' && r != '[' {
				in = false
			}
		case r == '\x1b':
			in = true
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestPlainProgress(t *testing.T) {
	var b bytes.Buffer
	p := NewPlainProgress(&b)
	p.Step("n1", "install")
	p.Line("n1", "output")
	p.Done("n1", nil, time.Second)
	p.Done("n2", errors.New("n2: bad"), time.Second)
	want := "n1 | > install\nn1 | output\nn1 | done in 1s\nn2 | FAILED after 1s: n2: bad\n"
	if b.String() != want {
		t.Errorf("got %q\nwant %q", b.String(), want)
	}
}
