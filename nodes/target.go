// Package nodes is rack's only way to touch a machine: SSH connections with
// verified host keys, commands (optionally through sudo), atomic file
// transfers over SFTP, node facts, and a parallel fan-out over many nodes.
package nodes

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kevinburke/ssh_config"

	"github.com/homelab/rack/inventory"
)

// Host key policies (the same strings as the inventory's ssh.hostKeyPolicy).
const (
	PolicyStrict    = inventory.HostKeyStrict
	PolicyAcceptNew = inventory.HostKeyAcceptNew
)

// Target is everything needed to reach one machine, fully resolved.
type Target struct {
	// Name is the node's inventory name; it prefixes every line of output.
	Name string
	// Address is the host name or IP address to dial (no port).
	Address string
	Port    int
	User    string
	// IdentityFiles are private keys tried in order; missing ones are skipped.
	IdentityFiles []string
	// KnownHosts is the known_hosts file read, and written under accept-new.
	KnownHosts string
	// HostKeyPolicy is PolicyStrict or PolicyAcceptNew.
	HostKeyPolicy string
	// HostKey pins the host key: "SHA256:…" or an authorized_keys style line.
	HostKey string
	// Sudo says whether privileged steps go through sudo; nil means
	// "when User is not root".
	Sudo *bool
	// Bastion is a jump host chain, "user@host:port[,user@host:port…]",
	// as given (inventory or ProxyJump).
	Bastion string
	// Jumps are the resolved hops of Bastion, first to last: each as
	// ~/.ssh/config describes that host (HostName, User, Port,
	// IdentityFile, its own ProxyJump), with the target's keys, known_hosts
	// and policy where it says nothing. nil for targets built by hand, whose
	// Bastion is then read with those defaults only.
	Jumps []Target

	// resolveErr is a problem met while resolving (a broken ~/.ssh/config);
	// Connect reports it rather than connecting with guessed settings.
	resolveErr error
}

// Addr is the dial address, host:port.
func (t Target) Addr() string {
	port := t.Port
	if port == 0 {
		port = 22
	}
	return net.JoinHostPort(t.Address, strconv.Itoa(port))
}

// String is user@host:port, the form used in messages.
func (t Target) String() string { return t.User + "@" + t.Addr() }

// UseSudo reports whether privileged steps go through sudo. Root never needs
// it, even when the inventory says sudo: true.
func (t Target) UseSudo() bool {
	if t.User == "root" {
		return false
	}
	return t.Sudo == nil || *t.Sudo
}

// Resolver turns inventory nodes into Targets. Its zero value uses the real
// home directory, ~/.ssh/config and the current user; tests set the fields.
type Resolver struct {
	// Home replaces the user's home directory ("~" in paths).
	Home string
	// SSHConfig is the ssh_config file to read; "" means Home/.ssh/config,
	// "none" disables it.
	SSHConfig string
	// User is the login used when neither inventory nor ssh_config name one.
	User string
}

// TargetFromInventory resolves a node with the default Resolver. A broken
// ~/.ssh/config does not stop resolution; Connect reports it.
func TargetFromInventory(n inventory.Node) Target {
	t, err := Resolver{}.Resolve(n)
	t.resolveErr = err
	return t
}

// defaultIdentities are OpenSSH's default keys, in its order of preference.
var defaultIdentities = []string{"id_ed25519", "id_ecdsa", "id_rsa"}

// Resolve applies: inventory value > ~/.ssh/config (by node name, then by
// address) > built-in defaults. It always returns a usable Target; the error
// reports a config file that could not be read.
func (r Resolver) Resolve(n inventory.Node) (Target, error) {
	home := r.home()
	cfg, cfgErr := r.loadConfig(home)
	lookup := func(key string) string {
		if cfg == nil {
			return ""
		}
		for _, alias := range []string{n.Name, n.Address} {
			if alias == "" {
				continue
			}
			if v, err := cfg.Get(alias, key); err == nil && v != "" {
				return v
			}
		}
		return ""
	}
	lookupAll := func(key string) []string {
		if cfg == nil {
			return nil
		}
		for _, alias := range []string{n.Name, n.Address} {
			if alias == "" {
				continue
			}
			if v, err := cfg.GetAll(alias, key); err == nil && len(v) > 0 {
				return v
			}
		}
		return nil
	}

	t := Target{
		Name:          n.Name,
		Address:       n.Address,
		Port:          n.SSH.Port,
		User:          n.SSH.User,
		KnownHosts:    n.SSH.KnownHosts,
		HostKeyPolicy: n.SSH.HostKeyPolicy,
		HostKey:       n.HostKey,
		Sudo:          n.SSH.Sudo,
		Bastion:       n.SSH.Bastion,
	}
	switch {
	case t.Address == "":
		t.Address = lookup("HostName")
		if t.Address == "" {
			t.Address = n.Name
		}
	case cfg != nil:
		// The address may itself be a Host alias: ssh would dial its HostName.
		if v, err := cfg.Get(n.Address, "HostName"); err == nil && v != "" {
			t.Address = v
		}
	}
	if t.Port == 0 {
		if p, err := strconv.Atoi(lookup("Port")); err == nil && p > 0 {
			t.Port = p
		} else {
			t.Port = 22
		}
	}
	if t.User == "" {
		t.User = lookup("User")
	}
	if t.User == "" {
		t.User = r.user()
	}
	tokens := expander{home: home, user: t.User, host: t.Address, name: n.Name, local: r.user()}
	if n.SSH.IdentityFile != "" {
		t.IdentityFiles = []string{tokens.expand(n.SSH.IdentityFile)}
	} else if files := lookupAll("IdentityFile"); len(files) > 0 {
		for _, f := range files {
			t.IdentityFiles = append(t.IdentityFiles, tokens.expand(f))
		}
	} else {
		for _, f := range defaultIdentities {
			t.IdentityFiles = append(t.IdentityFiles, filepath.Join(home, ".ssh", f))
		}
	}
	if t.KnownHosts == "" {
		// UserKnownHostsFile may list several files; rack reads and writes the first.
		if f := strings.Fields(lookup("UserKnownHostsFile")); len(f) > 0 && f[0] != "none" {
			t.KnownHosts = f[0]
		} else {
			t.KnownHosts = filepath.Join(home, ".ssh", "known_hosts")
		}
	}
	t.KnownHosts = tokens.expand(t.KnownHosts)
	if t.HostKeyPolicy == "" {
		t.HostKeyPolicy = PolicyStrict
	}
	if t.Bastion == "" {
		if pj := lookup("ProxyJump"); pj != "" && !strings.EqualFold(pj, "none") {
			t.Bastion = pj
		}
	}
	if t.Sudo == nil {
		v := t.User != "root"
		t.Sudo = &v
	}
	jumps, err := r.jumps(t, cfg, home, t.Bastion, 0)
	if err != nil {
		return t, errors.Join(cfgErr, fmt.Errorf("bastion: %w", err))
	}
	t.Jumps = jumps
	return t, cfgErr
}

// maxJumpDepth bounds ProxyJump chains that refer to each other.
const maxJumpDepth = 8

// jumps resolves a ProxyJump chain the way OpenSSH does: each hop's host is
// looked up in ssh_config as a Host of its own (HostName, User, Port,
// IdentityFile, and its own ProxyJump, which comes first).
func (r Resolver) jumps(t Target, cfg *ssh_config.Config, home, chain string, depth int) ([]Target, error) {
	hops, err := inventory.ParseJump(chain)
	if err != nil || len(hops) == 0 {
		return nil, err
	}
	if depth > maxJumpDepth {
		return nil, fmt.Errorf("ProxyJump chain deeper than %d: do the jump hosts refer to each other?", maxJumpDepth)
	}
	get := func(alias, key string) string {
		if cfg == nil {
			return ""
		}
		v, _ := cfg.Get(alias, key)
		return v
	}
	var out []Target
	for _, hop := range hops {
		if pj := get(hop.Host, "ProxyJump"); pj != "" && !strings.EqualFold(pj, "none") {
			before, err := r.jumps(t, cfg, home, pj, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, before...)
		}
		j := Target{Address: hop.Host, Port: hop.Port, User: hop.User,
			IdentityFiles: t.IdentityFiles, KnownHosts: t.KnownHosts, HostKeyPolicy: t.HostKeyPolicy}
		if v := get(hop.Host, "HostName"); v != "" {
			j.Address = v
		}
		if j.User == "" {
			j.User = get(hop.Host, "User")
		}
		if j.User == "" {
			j.User = t.User
		}
		if j.Port == 0 {
			if p, err := strconv.Atoi(get(hop.Host, "Port")); err == nil && p > 0 {
				j.Port = p
			} else {
				j.Port = 22
			}
		}
		if cfg != nil {
			if files, err := cfg.GetAll(hop.Host, "IdentityFile"); err == nil && len(files) > 0 && !(len(files) == 1 && files[0] == "") {
				tokens := expander{home: home, user: j.User, host: j.Address, name: hop.Host, local: r.user()}
				j.IdentityFiles = nil
				for _, f := range files {
					j.IdentityFiles = append(j.IdentityFiles, tokens.expand(f))
				}
			}
		}
		out = append(out, j)
	}
	for i := range out {
		out[i].Name = fmt.Sprintf("%s (bastion %d: %s)", t.Name, i+1, out[i].Address)
	}
	return out, nil
}

func (r Resolver) home() string {
	if r.Home != "" {
		return r.Home
	}
	if h, err := os.UserHomeDir(); err == nil {
		return h
	}
	return "/"
}

func (r Resolver) user() string {
	if r.User != "" {
		return r.User
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "root"
}

func (r Resolver) loadConfig(home string) (*ssh_config.Config, error) {
	path := r.SSHConfig
	switch path {
	case "none":
		return nil, nil
	case "":
		path = filepath.Join(home, ".ssh", "config")
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && r.SSHConfig == "" {
		return nil, nil // no ~/.ssh/config is normal
	}
	if err != nil {
		return nil, fmt.Errorf("ssh config: %w", err)
	}
	defer f.Close()
	cfg, err := ssh_config.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("ssh config %s: %w (fix it or move it aside)", path, err)
	}
	return cfg, nil
}

// expander implements the ssh_config tokens rack supports in paths:
// ~ and %d (home), %u (local user), %r (remote user), %h (host), %n (alias), %%.
type expander struct{ home, user, host, name, local string }

func (e expander) expand(p string) string {
	if p == "~" {
		return e.home
	}
	if strings.HasPrefix(p, "~/") {
		p = filepath.Join(e.home, p[2:])
	}
	if !strings.Contains(p, "%") {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+1 == len(p) {
			b.WriteByte(p[i])
			continue
		}
		i++
		switch p[i] {
		case 'd':
			b.WriteString(e.home)
		case 'u':
			b.WriteString(e.local)
		case 'r':
			b.WriteString(e.user)
		case 'h':
			b.WriteString(e.host)
		case 'n':
			b.WriteString(e.name)
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(p[i])
		}
	}
	return b.String()
}

// hops is the jump chain to dial through: Jumps as resolved, or for a
// target built by hand its Bastion with the target's keys, known_hosts and
// policy (never its pinned key).
func (t Target) hops() ([]Target, error) {
	if t.Jumps != nil || strings.TrimSpace(t.Bastion) == "" {
		return t.Jumps, nil
	}
	return Resolver{SSHConfig: "none", User: t.User}.jumps(t, nil, "", t.Bastion, 0)
}
