package nodes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/homelab/rack/internal/sleep"
)

// Options tune connections. The zero value is ready to use.
type Options struct {
	// Logger receives connection events (retries, recorded host keys).
	// nil discards them.
	Logger *slog.Logger
	// Output receives command output, one "name | line" per Write. It is
	// shared by all hosts of a fan-out, so it must be safe for concurrent
	// use (os.Stdout and os.Stderr are). nil discards output.
	Output io.Writer
	// Credentials is a key cache shared between connections, so an
	// encrypted key is decrypted (and prompted for) once. nil makes one from
	// Getenv and Prompt.
	Credentials *Credentials
	// Getenv reads RACK_SSH_PASSPHRASE, RACK_SUDO_PASSWORD and
	// SSH_AUTH_SOCK. nil means os.Getenv.
	Getenv func(string) string
	// Prompt asks for a key passphrase. nil asks on the terminal when stdin
	// is one, and otherwise reports that RACK_SSH_PASSPHRASE is needed.
	Prompt func(prompt string) ([]byte, error)

	// ConnectTimeout bounds the TCP dial plus the SSH handshake (default 10s).
	ConnectTimeout time.Duration
	// KeepAlive is the interval of keepalive@openssh.com requests (default
	// 15s; negative disables). After KeepAliveMissed unanswered ones
	// (default 3) the connection is closed, so a vanished host fails fast.
	KeepAlive       time.Duration
	KeepAliveMissed int
	// Attempts bounds connection attempts on transient failures (default 3),
	// and likewise the attempts of an upload or download.
	Attempts int
	// BackoffBase and BackoffMax shape the exponential backoff between
	// attempts (defaults 1s and 15s).
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// Ciphers overrides the SSH cipher preference. The default puts
	// aes128-gcm@openssh.com first: the fastest on CPUs with AES
	// instructions, x86 and the Pi 5 alike.
	Ciphers []string
	// SFTPPacket and SFTPRequests tune transfers: bytes per SFTP read or
	// write, and requests in flight per file (default 64). The default
	// packet is 255 KiB when the server's sftp-server announces
	// limits@openssh.com (OpenSSH 8.7+, whose limit that is) and the
	// protocol's safe 32 KiB otherwise: large writes cut the work of
	// sshd and sftp-server, which matters on a Pi.
	SFTPPacket   int
	SFTPRequests int
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Credentials == nil {
		o.Credentials = NewCredentials(o.Getenv, o.Prompt)
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = 15 * time.Second
	}
	if o.KeepAliveMissed <= 0 {
		o.KeepAliveMissed = 3
	}
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = time.Second
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 15 * time.Second
	}
	if len(o.Ciphers) == 0 {
		o.Ciphers = []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM, ssh.CipherChaCha20Poly1305,
			ssh.CipherAES128CTR, ssh.CipherAES192CTR, ssh.CipherAES256CTR}
	}
	if o.SFTPRequests <= 0 {
		o.SFTPRequests = 64
	}
	return o
}

// Host is a live connection to one node. It reconnects by itself when a
// transfer meets a dropped connection. Safe for concurrent use.
type Host struct {
	Target Target

	opts Options
	log  *slog.Logger
	// line receives one line of command output (without the prefix).
	line func(string)
	// step reports the current step to a fan-out's progress display.
	step func(string)

	sent atomic.Int64

	mu     sync.Mutex
	conn   *connection
	gen    int // bumped by every reconnect
	closed bool
	sftp   map[bool]*sftpSession // by privileged
	sudo   *sudoMode             // nil until probed
}

// connection is one SSH client plus the bastion clients it was dialled through.
type connection struct {
	client *ssh.Client
	hops   []*ssh.Client
	stop   chan struct{}
}

func (c *connection) close() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	c.client.Close()
	for i := len(c.hops) - 1; i >= 0; i-- {
		c.hops[i].Close()
	}
}

// Connect dials the target (through its bastions), verifies host keys,
// authenticates, and retries transient failures with backoff.
func Connect(ctx context.Context, t Target, o Options) (*Host, error) {
	o = o.withDefaults()
	h := &Host{Target: t, opts: o, log: o.Logger.With("node", t.Name), sftp: map[bool]*sftpSession{}}
	out := o.Output
	prefix := t.Name + " | "
	var outMu sync.Mutex // stdout and stderr lines arrive from two goroutines
	h.line = func(s string) {
		if out != nil {
			outMu.Lock()
			io.WriteString(out, prefix+s+"\n")
			outMu.Unlock()
		}
	}
	h.step = func(string) {}
	if err := h.connect(ctx); err != nil {
		return nil, err
	}
	return h, nil
}

// Close closes the connection and its SFTP sessions.
func (h *Host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	h.dropLocked()
	return nil
}

// BytesSent is the payload uploaded through this host so far, retries
// included (a converged upload adds nothing).
func (h *Host) BytesSent() int64 { return h.sent.Load() }

// Step names what the host is doing now, for progress displays.
func (h *Host) Step(name string) {
	h.log.Debug("step", "step", name)
	h.step(name)
}

// Client is the underlying SSH client, for callers that need a raw channel.
func (h *Host) Client() *ssh.Client {
	c, _, err := h.current(context.Background())
	if err != nil {
		return nil
	}
	return c.client
}

func (h *Host) connect(ctx context.Context) error {
	c, err := h.dial(ctx)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		c.close()
		return fmt.Errorf("%s: host closed", h.Target.Name)
	}
	h.conn = c
	h.gen++
	return nil
}

// current returns the live connection and its generation, reconnecting when
// the last one was dropped.
func (h *Host) current(ctx context.Context) (*connection, int, error) {
	h.mu.Lock()
	if h.conn != nil {
		c, g := h.conn, h.gen
		h.mu.Unlock()
		return c, g, nil
	}
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return nil, 0, fmt.Errorf("%s: host closed", h.Target.Name)
	}
	if err := h.reconnect(ctx, -1); err != nil {
		return nil, 0, err
	}
	return h.current(ctx)
}

// reconnect replaces the connection of generation gen (or any, for -1)
// unless another goroutine already did.
func (h *Host) reconnect(ctx context.Context, gen int) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return fmt.Errorf("%s: host closed", h.Target.Name)
	}
	if gen >= 0 && gen != h.gen && h.conn != nil {
		h.mu.Unlock()
		return nil
	}
	h.dropLocked()
	h.mu.Unlock()
	h.log.Info("reconnecting", "addr", h.Target.Addr())
	return h.connect(ctx)
}

// dropLocked closes the connection and everything riding on it.
func (h *Host) dropLocked() {
	for k, s := range h.sftp {
		s.close()
		delete(h.sftp, k)
	}
	if h.conn != nil {
		h.conn.close()
		h.conn = nil
	}
}

// dial makes a connection, retrying transient failures.
func (h *Host) dial(ctx context.Context) (*connection, error) {
	t := h.Target
	if t.resolveErr != nil {
		return nil, fmt.Errorf("%s: %w", t.Name, t.resolveErr)
	}
	var last error
	attempts := 0
	for attempts < h.opts.Attempts {
		attempts++
		c, err := h.dialOnce(ctx)
		if err == nil {
			return c, nil
		}
		last = err
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: connect %s: %w", t.Name, t.Addr(), ctx.Err())
		}
		if !IsTransient(err) {
			break
		}
		if attempts < h.opts.Attempts {
			d := backoff(attempts, h.opts.BackoffBase, h.opts.BackoffMax)
			h.log.Warn("connect failed, retrying", "addr", t.Addr(), "attempt", attempts, "in", d.Round(time.Millisecond), "err", shortNetError(err))
			if sleep.For(ctx, d) != nil {
				return nil, fmt.Errorf("%s: connect %s: %w", t.Name, t.Addr(), ctx.Err())
			}
		}
	}
	var hk *HostKeyError
	var ae *AuthError
	var ce *ConnectError
	if errors.As(last, &hk) || errors.As(last, &ae) || errors.As(last, &ce) {
		return nil, last
	}
	return nil, &ConnectError{Node: t.Name, Addr: t.Addr(), Attempts: attempts, Err: last}
}

// dialOnce connects through every bastion hop to the target.
func (h *Host) dialOnce(ctx context.Context) (*connection, error) {
	hops, err := h.Target.hops()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h.Target.Name, err)
	}
	c := &connection{stop: make(chan struct{})}
	var via *ssh.Client
	for _, hop := range append(hops, h.Target) {
		client, err := h.handshake(ctx, hop, via)
		if err != nil {
			for _, p := range c.hops {
				p.Close()
			}
			var ce *ConnectError
			if hop.Name != h.Target.Name && !errors.As(err, &ce) && IsTransient(err) {
				err = &ConnectError{Node: hop.Name, Addr: hop.Addr(), Attempts: 1, Err: err}
			}
			return nil, err
		}
		if hop.Name == h.Target.Name {
			c.client = client
		} else {
			c.hops = append(c.hops, client)
		}
		via = client
	}
	if h.opts.KeepAlive > 0 {
		for _, cl := range append(c.hops, c.client) {
			go h.keepAlive(cl, c.stop)
		}
	}
	return c, nil
}

// handshake dials one hop (directly or through via) and logs in.
func (h *Host) handshake(ctx context.Context, t Target, via *ssh.Client) (*ssh.Client, error) {
	addr := t.Addr()
	ctx, cancel := context.WithTimeout(ctx, h.opts.ConnectTimeout)
	defer cancel()

	var conn net.Conn
	var err error
	if via == nil {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", addr)
	} else {
		conn, err = via.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	// The handshake itself has no context: a deadline and a watcher bound it.
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			conn.Close()
		case <-done:
		}
	}()

	signers, tried, closeAgent := h.opts.Credentials.authFor(t.IdentityFiles)
	defer closeAgent()
	dest := t.String()
	if len(signers) == 0 {
		conn.Close()
		return nil, &AuthError{Node: t.Name, Dest: dest, Tried: tried, NoKey: true}
	}
	v := &hostKeyVerifier{node: t.Name, addr: addr, file: t.KnownHosts, policy: t.HostKeyPolicy, pin: t.HostKey, log: h.opts.Logger}
	cfg := &ssh.ClientConfig{
		User:              t.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback:   v.check,
		HostKeyAlgorithms: v.algorithms(),
		Config:            ssh.Config{Ciphers: h.opts.Ciphers},
		Timeout:           h.opts.ConnectTimeout,
	}
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		var hk *HostKeyError
		switch {
		case errors.As(err, &hk):
			return nil, hk
		case isAuthFailure(err):
			return nil, &AuthError{Node: t.Name, Dest: dest, Tried: tried, Err: err}
		case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
			return nil, fmt.Errorf("ssh handshake: %w", os.ErrDeadlineExceeded)
		}
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), nil
}

// keepAlive pings the server; after KeepAliveMissed silent intervals it
// closes the client so blocked reads fail instead of hanging forever.
func (h *Host) keepAlive(c *ssh.Client, stop chan struct{}) {
	tick := time.NewTicker(h.opts.KeepAlive)
	defer tick.Stop()
	missed := 0
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		reply := make(chan error, 1)
		go func() {
			_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		select {
		case <-stop:
			return
		case err := <-reply:
			if err != nil {
				return // the connection is gone; users of it see the error
			}
			missed = 0
		case <-time.After(h.opts.KeepAlive):
			missed++
			if missed >= h.opts.KeepAliveMissed {
				h.log.Warn("no keepalive answer, closing connection", "missed", missed)
				c.Close()
				return
			}
		}
	}
}

// SFTP packet sizes: what every server must accept, and OpenSSH's
// sftp-server limit (SFTP_MAX_MSG_LENGTH - 1024, also its longest read).
const (
	sftpSafePacket    = 32768
	sftpOpenSSHPacket = 261120
)

// sftpOptions are the client options that make transfers run at line rate.
func (h *Host) sftpOptions(packet int) []sftp.ClientOption {
	opts := []sftp.ClientOption{
		sftp.UseConcurrentWrites(true),
		sftp.UseConcurrentReads(true),
		sftp.MaxConcurrentRequestsPerFile(h.opts.SFTPRequests),
	}
	if packet <= sftpSafePacket {
		opts = append(opts, sftp.MaxPacket(packet))
	} else {
		opts = append(opts, sftp.MaxPacketUnchecked(packet))
	}
	return opts
}

// sftpPacket is the packet size to try first, and whether a client made
// with it must be checked for the limits@openssh.com extension.
func (h *Host) sftpPacket() (packet int, check bool) {
	if h.opts.SFTPPacket > 0 {
		return h.opts.SFTPPacket, false
	}
	return sftpOpenSSHPacket, true
}
