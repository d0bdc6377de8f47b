package nodes

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/term"
)

// Environment variables rack reads for secrets. Their values are never
// logged nor passed on a command line.
const (
	EnvPassphrase   = "RACK_SSH_PASSPHRASE"
	EnvSudoPassword = "RACK_SUDO_PASSWORD"
	EnvAuthSock     = "SSH_AUTH_SOCK"
)

// errNoTTY means a passphrase is needed but nobody can type it.
var errNoTTY = errors.New("stdin is not a terminal")

// Credentials loads and caches private keys, so a fan-out over many nodes
// decrypts (and prompts for) each key once. Safe for concurrent use.
type Credentials struct {
	getenv func(string) string
	prompt func(prompt string) ([]byte, error)
	home   string

	mu   sync.Mutex
	keys map[string]*loadedKey
}

type loadedKey struct {
	signer ssh.Signer
	note   string // why it is unusable, when signer is nil
}

// NewCredentials builds a key cache. getenv nil means os.Getenv; prompt nil
// means asking on the terminal when stdin is one.
func NewCredentials(getenv func(string) string, prompt func(string) ([]byte, error)) *Credentials {
	if getenv == nil {
		getenv = os.Getenv
	}
	if prompt == nil {
		prompt = terminalPrompt
	}
	home, _ := os.UserHomeDir()
	return &Credentials{getenv: getenv, prompt: prompt, home: home, keys: map[string]*loadedKey{}}
}

func terminalPrompt(prompt string) ([]byte, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, errNoTTY
	}
	fmt.Fprint(os.Stderr, prompt)
	defer fmt.Fprintln(os.Stderr)
	return term.ReadPassword(fd)
}

// key loads one identity file, prompting at most once per file.
func (c *Credentials) key(path string) *loadedKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.keys[path]; ok {
		return k
	}
	k := c.load(path)
	c.keys[path] = k
	return k
}

func (c *Credentials) load(path string) *loadedKey {
	pem, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &loadedKey{note: "not found"}
	}
	if err != nil {
		return &loadedKey{note: "unreadable: " + err.Error()}
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err == nil {
		return &loadedKey{signer: signer}
	}
	var missing *ssh.PassphraseMissingError
	if !errors.As(err, &missing) {
		return &loadedKey{note: "not a private key: " + err.Error()}
	}
	var pass []byte
	source := EnvPassphrase
	if v := c.getenv(EnvPassphrase); v != "" {
		pass = []byte(v)
	} else {
		source = "the prompt"
		pass, err = c.prompt(fmt.Sprintf("Enter passphrase for key %s: ", c.short(path)))
		if errors.Is(err, errNoTTY) {
			return &loadedKey{note: "encrypted; set " + EnvPassphrase + " or run rack in a terminal"}
		}
		if err != nil {
			return &loadedKey{note: "encrypted; reading the passphrase failed: " + err.Error()}
		}
	}
	defer clear(pass)
	signer, err = ssh.ParsePrivateKeyWithPassphrase(pem, pass)
	if errors.Is(err, x509.IncorrectPasswordError) {
		return &loadedKey{note: "wrong passphrase from " + source}
	}
	if err != nil {
		return &loadedKey{note: "cannot decrypt: " + err.Error()}
	}
	return &loadedKey{signer: signer}
}

// short abbreviates the home directory to ~ for messages.
func (c *Credentials) short(path string) string {
	if c.home != "" && c.home != "/" {
		if rel, err := filepath.Rel(c.home, path); err == nil && !strings.HasPrefix(rel, "..") {
			return "~/" + rel
		}
	}
	return path
}

// authFor collects signers for one connection: ssh-agent's keys first (as
// OpenSSH does), then the identity files. tried describes every source for
// error messages; closeAgent must be called once the handshake is over.
func (c *Credentials) authFor(files []string) (signers []ssh.Signer, tried []string, closeAgent func()) {
	closeAgent = func() {}
	seen := map[string]bool{}
	add := func(s ssh.Signer) bool {
		k := string(s.PublicKey().Marshal())
		if seen[k] {
			return false
		}
		seen[k] = true
		signers = append(signers, s)
		return true
	}
	if sock := c.getenv(EnvAuthSock); sock != "" {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			tried = append(tried, "agent (unreachable: "+shortNetError(err)+")")
		} else {
			closeAgent = func() { conn.Close() }
			agentSigners, err := agent.NewClient(conn).Signers()
			switch {
			case err != nil:
				tried = append(tried, "agent (error: "+err.Error()+")")
			case len(agentSigners) == 0:
				tried = append(tried, "agent (no keys)")
			default:
				n := 0
				for _, s := range agentSigners {
					if add(s) {
						n++
					}
				}
				tried = append(tried, fmt.Sprintf("agent (%d key%s)", n, plural(n)))
			}
		}
	} else {
		tried = append(tried, "agent (SSH_AUTH_SOCK not set)")
	}
	for _, f := range files {
		k := c.key(f)
		switch {
		case k.signer == nil:
			tried = append(tried, c.short(f)+" ("+k.note+")")
		case !add(k.signer):
			tried = append(tried, c.short(f)+" (same key as the agent's)")
		default:
			tried = append(tried, c.short(f))
		}
	}
	return signers, tried, closeAgent
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// isAuthFailure recognises x/crypto/ssh's "no method worked" error.
func isAuthFailure(err error) bool {
	return err != nil && strings.Contains(err.Error(), "unable to authenticate")
}

// parsePin accepts "SHA256:…" (with or without the prefix) or a public key
// line ("ssh-ed25519 AAAA…"). It returns the fingerprint and, for a full
// key, its algorithm so the handshake asks for that key type first.
func parsePin(pin string) (fingerprint, keyType string) {
	pin = strings.TrimSpace(pin)
	if pin == "" {
		return "", ""
	}
	if key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pin)); err == nil {
		return ssh.FingerprintSHA256(key), key.Type()
	}
	if !strings.HasPrefix(pin, "SHA256:") {
		pin = "SHA256:" + pin
	}
	// Fingerprints are unpadded base64; tolerate a pasted "=" padding.
	return strings.TrimRight(pin, "="), ""
}

func equalFingerprint(a, b string) bool {
	return bytes.Equal([]byte(strings.TrimRight(a, "=")), []byte(strings.TrimRight(b, "=")))
}
