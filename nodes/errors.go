package nodes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// HostKeyProblem says why a host key was refused.
type HostKeyProblem int

// Host key problems.
const (
	// HostKeyUnknown: strict policy and the host is not in known_hosts.
	HostKeyUnknown HostKeyProblem = iota + 1
	// HostKeyChanged: known_hosts has a different key for the host. Always refused.
	HostKeyChanged
	// HostKeyPinMismatch: the key does not match the inventory's pinned hostKey.
	HostKeyPinMismatch
	// HostKeyRevoked: known_hosts marks the key @revoked.
	HostKeyRevoked
)

// KnownKeyRef is a key recorded in a known_hosts file.
type KnownKeyRef struct {
	Fingerprint string
	File        string
	Line        int
}

// HostKeyError refuses a connection before authentication, so nothing runs.
type HostKeyError struct {
	Node    string
	Addr    string
	Problem HostKeyProblem
	// Got is the SHA256 fingerprint the host presented.
	Got string
	// Want are the keys known_hosts holds for the host (HostKeyChanged).
	Want []KnownKeyRef
	// Pinned is the inventory's hostKey (HostKeyPinMismatch).
	Pinned     string
	KnownHosts string
}

func (e *HostKeyError) Error() string {
	host, port, _ := net.SplitHostPort(e.Addr)
	entry := host
	if port != "22" {
		entry = "[" + host + "]:" + port
	}
	switch e.Problem {
	case HostKeyUnknown:
		return fmt.Sprintf("%s: host key of %s is unknown (%s not in %s) and hostKeyPolicy is strict: "+
			"verify the fingerprint on the console and add it (ssh-keyscan -p %s %s >> %s), "+
			"pin it with hostKey: %s in the inventory, or set hostKeyPolicy: accept-new",
			e.Node, e.Addr, e.Got, e.KnownHosts, port, host, e.KnownHosts, e.Got)
	case HostKeyChanged:
		var want []string
		var lines []string
		for _, w := range e.Want {
			want = append(want, w.Fingerprint)
			lines = append(lines, fmt.Sprintf("%s:%d", w.File, w.Line))
		}
		file := e.KnownHosts
		if len(e.Want) > 0 {
			file = e.Want[0].File
		}
		return fmt.Sprintf("%s: HOST KEY CHANGED for %s, refusing to connect (possible man-in-the-middle): "+
			"known_hosts has %s (%s), the host presented %s; if the host was reinstalled, "+
			"remove the old entry (%s, or ssh-keygen -R '%s' -f %s) and connect again",
			e.Node, e.Addr, strings.Join(want, ", "), strings.Join(lines, ", "), e.Got,
			strings.Join(lines, ", "), entry, file)
	case HostKeyPinMismatch:
		return fmt.Sprintf("%s: host key of %s does not match the pinned hostKey: inventory pins %s, "+
			"the host presented %s; refusing to connect (update hostKey only if the host was reinstalled)",
			e.Node, e.Addr, e.Pinned, e.Got)
	case HostKeyRevoked:
		return fmt.Sprintf("%s: host key %s of %s is marked @revoked in %s; refusing to connect",
			e.Node, e.Got, e.Addr, e.KnownHosts)
	}
	return fmt.Sprintf("%s: host key of %s refused", e.Node, e.Addr)
}

// AuthError is a failure to log in: no key could be loaded, or the server
// accepted none of the keys offered.
type AuthError struct {
	Node string
	// Dest is user@host:port.
	Dest string
	// Tried describes every credential source, e.g. "agent (2 keys)",
	// "~/.ssh/id_rsa (not found)".
	Tried []string
	// NoKey is true when no key could even be offered.
	NoKey bool
	Err   error
}

func (e *AuthError) Error() string {
	tried := strings.Join(e.Tried, ", ")
	if e.NoKey {
		return fmt.Sprintf("%s: no usable key for %s (tried: %s): set ssh.identityFile in the inventory, "+
			"load a key into ssh-agent (SSH_AUTH_SOCK), or set RACK_SSH_PASSPHRASE for an encrypted key",
			e.Node, e.Dest, tried)
	}
	user := e.Dest
	if i := strings.Index(user, "@"); i >= 0 {
		user = user[:i]
	}
	return fmt.Sprintf("%s: permission denied for %s (tried: %s): add the matching public key to "+
		"~%s/.ssh/authorized_keys on the host (ssh-copy-id), or point ssh.identityFile / ssh.user at one it accepts",
		e.Node, e.Dest, tried, user)
}

func (e *AuthError) Unwrap() error { return e.Err }

// ConnectError is a failure to reach a host's sshd, after retries when the
// failure looked transient.
type ConnectError struct {
	Node     string
	Addr     string
	Attempts int
	Err      error
}

func (e *ConnectError) Error() string {
	msg := fmt.Sprintf("%s: connect %s: %s", e.Node, e.Addr, shortNetError(e.Err))
	if e.Attempts > 1 {
		msg += fmt.Sprintf(" after %d attempts", e.Attempts)
	}
	return msg
}

func (e *ConnectError) Unwrap() error { return e.Err }

// ExitError is a remote command that ran and exited non-zero.
type ExitError struct {
	Node   string
	Cmd    string
	Status int
	// Signal is set when the command was killed by a signal.
	Signal string
	// StderrTail is the end of the command's stderr, for the message.
	StderrTail string
}

func (e *ExitError) Error() string {
	how := fmt.Sprintf("exited with status %d", e.Status)
	if e.Signal != "" {
		how = "killed by signal " + e.Signal
	}
	msg := fmt.Sprintf("%s: %q %s", e.Node, abbreviate(e.Cmd, 80), how)
	if tail := strings.TrimSpace(e.StderrTail); tail != "" {
		lines := strings.Split(tail, "\n")
		msg += ": " + strings.TrimSpace(lines[len(lines)-1])
	}
	return msg
}

// SudoError is a privileged step that sudo refused.
type SudoError struct {
	Node   string
	Dest   string
	Reason string
}

func (e *SudoError) Error() string {
	return fmt.Sprintf("%s: sudo as %s: %s", e.Node, e.Dest, e.Reason)
}

// IsTransient reports whether err is worth a retry after a pause: the host
// refused, reset or timed out the connection, or it dropped (sshd restarted,
// host rebooting). Authentication, host key, sudo, exit-status and
// cancellation errors never are.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var (
		hk   *HostKeyError
		ae   *AuthError
		ee   *ExitError
		se   *SudoError
		dnse *net.DNSError
	)
	switch {
	case errors.As(err, &hk), errors.As(err, &ae), errors.As(err, &ee), errors.As(err, &se):
		return false
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.As(err, &dnse):
		return dnse.IsTemporary || dnse.IsTimeout
	}
	for _, errno := range []syscall.Errno{
		syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EPIPE,
		syscall.ETIMEDOUT, syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.EHOSTDOWN, syscall.ENETDOWN,
	} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var missing *ssh.ExitMissingError
	if errors.As(err, &missing) {
		return true // the session ended without a status: the connection died
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, sftp.ErrSSHFxConnectionLost) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	// x/crypto/ssh reports some connection losses only as text.
	msg := err.Error()
	for _, s := range []string{"connection lost", "use of closed network connection", "broken pipe",
		"connection reset", "ssh: disconnect", "EOF"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// backoff is the pause before retry number attempt (1-based): exponential
// from base, capped at max, with jitter in [d/2, d) so that many nodes
// rebooting together do not retry in lockstep.
func backoff(attempt int, base, max time.Duration) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// shortNetError turns "dial tcp 10.0.0.1:22: connect: connection refused"
// into "connection refused": the address is already in the message.
func shortNetError(err error) string {
	if err == nil {
		return "unknown error"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	return err.Error()
}

func abbreviate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
