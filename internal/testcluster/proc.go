package testcluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/homelab/rack/internal/procstat"
)

// stopGrace is how long a component gets to exit after SIGTERM before
// SIGKILL. The data is thrown away, so nothing is lost by not waiting for
// kube-apiserver's graceful shutdown, which drains watches for 10 s or more.
const stopGrace = time.Second

// proc is one control-plane component this process started and reaps.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// spawn starts a component with its output in dir/<name>.log.
func spawn(dir, name, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// kwok reads ~/.kwok/kwok.yaml when it exists; a developer's file there
	// must not change the test cluster.
	cmd.Env = append(os.Environ(), "HOME="+dir, "KWOK_WORKDIR="+filepath.Join(dir, "kwok-workdir"))
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: a terminal's Ctrl-C reaches the test only,
		// which then stops the components in order.
		Setpgid: true,
		// If the test process dies without cleaning up (SIGKILL, a crash),
		// the kernel kills the components with it. The sweep in Start
		// catches whatever escapes this.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and, after stopGrace, SIGKILL.
func (p *proc) stop() error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) survives SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

// tail returns the last n lines of the component's log.
func (p *proc) tail(n int) string {
	return tailFile(p.log, n)
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// owner identifies the process that owns a cluster directory. PID plus
// start time plus boot ID tells a live owner from an unrelated process that
// got the same PID later, or from a PID of a previous boot.
type owner struct {
	PID    int    `json:"pid"`
	Start  uint64 `json:"start"`
	BootID string `json:"bootID"`
}

const ownerFile = "owner.json"

func self() (owner, error) {
	start, err := procStart(os.Getpid())
	if err != nil {
		return owner{}, err
	}
	return owner{PID: os.Getpid(), Start: start, BootID: bootID()}, nil
}

func (o owner) alive() bool {
	if o.BootID != bootID() {
		return false
	}
	start, err := procStart(o.PID)
	return err == nil && start == o.Start
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

// procStart returns the start time (field 22 of /proc/PID/stat) of a live,
// non-zombie process.
func procStart(pid int) (uint64, error) {
	s, err := procstat.Read(pid)
	if err != nil {
		return 0, err
	}
	if s.Zombie() {
		return 0, fmt.Errorf("process %d is a zombie", pid)
	}
	return s.Start, nil
}

// sweep removes cluster directories under root whose owner is gone, after
// killing any component still running from them (a component's argv always
// names a file in its cluster's directory, which is how they are found even
// when Pdeathsig did not fire). Callers hold the state lock.
func sweep(root string, logf func(string, ...any)) error {
	ents, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	var stale []string
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		var o owner
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err == nil {
			err = json.Unmarshal(b, &o)
		}
		// Unreadable owner: the directory was created and owner.json written
		// under the lock, so a missing file means a half-removed leftover.
		if err == nil && o.alive() {
			continue
		}
		stale = append(stale, dir)
	}
	if len(stale) == 0 {
		return nil
	}
	var errs []error
	for _, dir := range stale {
		logf("testcluster: removing leftovers of a crashed run: %s", dir)
		if err := killUsers(dir + "/"); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killUsers SIGKILLs every process whose command line mentions prefix and
// waits until they are gone.
func killUsers(prefix string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var pids []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err != nil || !bytes.Contains(cmdline, []byte(prefix)) {
				continue
			}
			if _, err := procStart(pid); err != nil {
				continue // zombie: its parent reaps it, nothing holds files
			}
			pids = append(pids, pid)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v of %s survive SIGKILL", pids, prefix)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
