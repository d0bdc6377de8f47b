// Package child starts and stops the test rack's long-running processes (a
// control plane's components, a node's containerd, kubelet and kube-proxy,
// a fake k3s server's etcd and API server): output to a log file, a process
// group of their own, and death with their parent, as a k3s server's
// components die with k3s. Only the standard library, so the fake k3s can
// import it.
package child

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Proc is a running child, reaped by its own goroutine.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	// Log is the file holding its stdout and stderr.
	Log  string
	done chan struct{}
}

// Options tune Start.
type Options struct {
	Dir string
	// Env is added to this process's environment.
	Env []string
}

// Start runs bin with args, its output appended to logPath. The child has a
// process group of its own (a terminal's Ctrl-C reaches the parent only,
// which stops its children in order) and is killed by the kernel if the
// parent dies without stopping it (SIGKILL, a crash).
func Start(name, logPath, bin string, args []string, o Options) (*Proc, error) {
	if bin == "" {
		return nil, fmt.Errorf("starting %s: no binary given", name)
	}
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	fmt.Fprintf(lf, "==== %s %s %s\n", time.Now().UTC().Format(time.RFC3339), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Dir = o.Dir
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), o.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Exited reports whether the child has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the child has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM and, after grace, SIGKILL.
func (p *Proc) Stop(grace time.Duration) error {
	if p == nil || p.Exited() {
		return nil
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.Cmd.Process.Kill()
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) survives SIGKILL", p.Name, p.Cmd.Process.Pid)
	}
}

// Tail is the end of the child's log, for error messages.
func (p *Proc) Tail(n int) string { return Tail(p.Log, n) }

// Tail returns the last n lines of a file ("" when it cannot be read).
func Tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
