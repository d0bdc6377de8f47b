package nodes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// RunOptions tune one remote command.
type RunOptions struct {
	// Privileged runs the command as root: through sudo when the target
	// uses sudo, directly when it logs in as root.
	Privileged bool
	// Stdin feeds the command's standard input.
	Stdin io.Reader
	// Stdout, when set, receives stdout raw instead of streaming it as
	// prefixed lines.
	Stdout io.Writer
	// Quiet keeps stderr (and stdout) off the output; stderr is still kept
	// for ExitError.
	Quiet bool
}

// Run runs cmd with /bin/sh on the host and streams its output line by line
// as "name | line". A non-zero exit is an *ExitError. Cancelling ctx signals
// and closes the session. Never put a secret in cmd: use WriteSecretFile or
// Stdin.
func (h *Host) Run(ctx context.Context, cmd Cmd, o RunOptions) error {
	line, err := cmd.Line()
	if err != nil {
		return fmt.Errorf("%s: %q: %w", h.Target.Name, abbreviate(cmd.Script, 80), err)
	}
	prefix, secret, err := h.sudoFor(ctx, o.Privileged)
	if err != nil {
		return err
	}
	var stdin io.Reader
	if secret != nil || o.Stdin != nil {
		readers := []io.Reader{bytes.NewReader(secret)}
		if o.Stdin != nil {
			readers = append(readers, o.Stdin)
		}
		stdin = io.MultiReader(readers...)
	}
	tail := &tailBuffer{max: 4096}
	emit := h.line
	if o.Quiet {
		emit = func(string) {}
	}
	stderr := &lineWriter{emit: emit, tee: tail}
	var stdout io.Writer
	var outLines *lineWriter
	if o.Stdout != nil {
		stdout = o.Stdout
	} else {
		outLines = &lineWriter{emit: emit}
		stdout = outLines
	}
	err = h.exec(ctx, prefix+line, stdin, stdout, stderr)
	stderr.flush()
	if outLines != nil {
		outLines.flush()
	}
	return h.commandError(cmd.Script, err, tail.String())
}

// Output runs cmd and returns its stdout.
func (h *Host) Output(ctx context.Context, cmd Cmd, o RunOptions) ([]byte, error) {
	var buf bytes.Buffer
	o.Stdout = &buf
	err := h.Run(ctx, cmd, o)
	return buf.Bytes(), err
}

func (h *Host) commandError(cmd string, err error, stderrTail string) error {
	if err == nil {
		return nil
	}
	var xe *ssh.ExitError
	if errors.As(err, &xe) {
		return &ExitError{Node: h.Target.Name, Cmd: cmd, Status: xe.ExitStatus(), Signal: xe.Signal(), StderrTail: stderrTail}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %q: %w", h.Target.Name, abbreviate(cmd, 80), err)
	}
	return fmt.Errorf("%s: %q: connection lost: %w", h.Target.Name, abbreviate(cmd, 80), err)
}

// exec runs one raw command line in a new session. A session that cannot
// even be opened on a dead connection is retried once on a new connection:
// nothing ran yet, so that is safe.
func (h *Host) exec(ctx context.Context, line string, stdin io.Reader, stdout, stderr io.Writer) error {
	sess, err := h.session(ctx)
	if err != nil {
		return err
	}
	defer sess.Close()
	sess.Stdin = stdin
	sess.Stdout = stdout
	sess.Stderr = stderr
	if err := sess.Start(line); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// TERM lets the remote side clean up. sudo relays it to the command
		// only while the session stays open: closing it at once leaves a
		// privileged command running on the node. So wait a moment for the
		// command to end, then close the channel regardless.
		_ = sess.Signal(ssh.SIGTERM)
		select {
		case <-done:
		case <-time.After(cancelGrace):
			sess.Close()
			<-done
		}
		return ctx.Err()
	}
}

// cancelGrace is how long a cancelled command has to end after its TERM.
const cancelGrace = 3 * time.Second

// session opens an SSH session, reconnecting once if the connection died.
func (h *Host) session(ctx context.Context) (*ssh.Session, error) {
	for attempt := 0; ; attempt++ {
		c, gen, err := h.current(ctx)
		if err != nil {
			return nil, err
		}
		sess, err := c.client.NewSession()
		if err == nil {
			return sess, nil
		}
		if attempt > 0 || !IsTransient(err) || ctx.Err() != nil {
			return nil, fmt.Errorf("%s: opening a session: %w", h.Target.Name, err)
		}
		if err := h.reconnect(ctx, gen); err != nil {
			return nil, err
		}
	}
}

// sudo modes, found by probing once per host.
type sudoMode struct{ password bool }

// sudoFor returns the command prefix for a (non-)privileged command and the
// bytes to write first on its stdin (the sudo password line, if any).
func (h *Host) sudoFor(ctx context.Context, privileged bool) (prefix string, stdin []byte, err error) {
	if !privileged || !h.Target.UseSudo() {
		return "", nil, nil
	}
	h.mu.Lock()
	m := h.sudo
	h.mu.Unlock()
	if m == nil {
		if m, err = h.probeSudo(ctx); err != nil {
			return "", nil, err
		}
		h.mu.Lock()
		h.sudo = m
		h.mu.Unlock()
	}
	if !m.password {
		return "sudo -n -- ", nil, nil
	}
	// -k makes sudo always read the password we send, so it can never be
	// left over on the command's stdin; -p '' keeps the prompt off stderr.
	return "sudo -k -S -p '' -- ", []byte(h.opts.Getenv(EnvSudoPassword) + "\n"), nil
}

// probeSudo finds out whether sudo needs a password, and checks the one we
// have before any real command depends on it.
func (h *Host) probeSudo(ctx context.Context) (*sudoMode, error) {
	dest := h.Target.String()
	var errOut bytes.Buffer
	err := h.exec(ctx, "sudo -n -- sh -c true", nil, io.Discard, &errOut)
	if err == nil {
		return &sudoMode{}, nil
	}
	var xe *ssh.ExitError
	if !errors.As(err, &xe) {
		return nil, fmt.Errorf("%s: probing sudo: %w", h.Target.Name, err)
	}
	msg := strings.TrimSpace(errOut.String())
	if xe.ExitStatus() == 127 || strings.Contains(msg, "not found") {
		return nil, &SudoError{Node: h.Target.Name, Dest: dest, Reason: "sudo is not installed: install it, or log in as root (ssh.user: root)"}
	}
	if strings.Contains(msg, "not in the sudoers") || strings.Contains(msg, "not allowed") {
		return nil, &SudoError{Node: h.Target.Name, Dest: dest, Reason: msg + ": grant " + h.Target.User + " sudo rights, or log in as root"}
	}
	pw := h.opts.Getenv(EnvSudoPassword)
	if pw == "" {
		return nil, &SudoError{Node: h.Target.Name, Dest: dest, Reason: "sudo needs a password: set " + EnvSudoPassword +
			", or allow NOPASSWD for " + h.Target.User + " in sudoers, or log in as root"}
	}
	errOut.Reset()
	err = h.exec(ctx, "sudo -k -S -p '' -- sh -c true", strings.NewReader(pw+"\n"), io.Discard, &errOut)
	if err == nil {
		return &sudoMode{password: true}, nil
	}
	if !errors.As(err, &xe) {
		return nil, fmt.Errorf("%s: probing sudo: %w", h.Target.Name, err)
	}
	return nil, &SudoError{Node: h.Target.Name, Dest: dest, Reason: "sudo rejected the password from " + EnvSudoPassword}
}

// lineWriter splits a stream into lines for emit; tee sees the raw bytes.
type lineWriter struct {
	emit func(string)
	tee  io.Writer
	mu   sync.Mutex
	buf  []byte
}

const maxLine = 64 << 10

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.tee != nil {
		w.tee.Write(p)
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(strings.TrimRight(string(w.buf[:i]), "\r"))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > maxLine { // a runaway line without newline
		w.emit(string(w.buf))
		w.buf = nil
	}
	return len(p), nil
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(strings.TrimRight(string(w.buf), "\r"))
		w.buf = nil
	}
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	max int
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
