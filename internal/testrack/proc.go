package testrack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/homelab/rack/internal/procstat"
)

// procInfo is the part of /proc/PID/stat the rack needs.
type procInfo struct {
	ppid  int
	state byte
	// start is the process start time in clock ticks after boot; together with
	// the boot ID it tells a live owner from an unrelated process that got the
	// same PID later.
	start uint64
}

func readProc(pid int) (procInfo, error) {
	s, err := procstat.Read(pid)
	if err != nil {
		return procInfo{}, err
	}
	return procInfo{ppid: s.PPID, state: s.State, start: s.Start}, nil
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

func allPids() []int {
	ents, _ := os.ReadDir("/proc")
	pids := make([]int, 0, len(ents))
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// nsID identifies a namespace by the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

func statNS(path string) (nsID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

// pidsInNS lists the processes whose namespace of kind ("net", "mnt") is id.
// Scanning /proc (rather than trusting recorded PIDs) also finds whatever a
// test or an ssh session started inside a host, daemons included.
func pidsInNS(kind string, id nsID) []int {
	self := os.Getpid()
	var out []int
	for _, pid := range allPids() {
		if pid == self {
			continue
		}
		got, err := statNS("/proc/" + strconv.Itoa(pid) + "/ns/" + kind)
		if err == nil && got == id {
			out = append(out, pid)
		}
	}
	return out
}

// killNetns SIGKILLs every process inside the named network namespace and
// waits until none is left, so the namespace really goes away with
// `ip netns del`. Killing repeatedly covers processes forked meanwhile.
func killNetns(name string) error {
	id, err := statNS("/run/netns/" + name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	find := func() []int { return pidsInNS("net", id) }
	return procstat.KillUntilGone(find, 10*time.Second, "processes in netns "+name+":", nil)
}

// freezeTree SIGSTOPs root and all its descendants and returns them. It
// repeats until the set stops growing: a stopped process cannot fork, so once
// a pass finds nothing new, no process of the tree can escape the SIGKILL
// that follows (killing first would let children be reparented to init,
// where they could no longer be told apart from unrelated processes).
func freezeTree(root int) []int {
	seen := map[int]bool{root: true}
	_ = syscall.Kill(root, syscall.SIGSTOP)
	for {
		grew := false
		for _, pid := range allPids() {
			if seen[pid] {
				continue
			}
			p, err := readProc(pid)
			if err == nil && seen[p.ppid] {
				seen[pid] = true
				grew = true
				_ = syscall.Kill(pid, syscall.SIGSTOP)
			}
		}
		if !grew {
			break
		}
	}
	out := make([]int, 0, len(seen))
	for pid := range seen {
		out = append(out, pid)
	}
	return out
}

// run runs a command and folds its output into the error, because a bare
// "exit status 2" from ip or useradd says nothing about what went wrong.
func run(ctx context.Context, name string, args ...string) error {
	_, err := runOut(ctx, nil, name, args...)
	return err
}

func runOut(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = cleanEnv
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.Bytes(), &CmdError{Args: append([]string{name}, args...), Err: err, Stderr: msg}
	}
	return stdout.Bytes(), nil
}

// CmdError is returned when a command the rack ran (ip, useradd, or a script
// given to Host.Exec) fails. Stderr holds what the command printed.
type CmdError struct {
	Args   []string
	Err    error
	Stderr string
}

func (e *CmdError) Error() string {
	args := e.Args
	// Scripts can be long; the first line is enough to recognise them.
	if n := len(args); n > 0 {
		last := args[n-1]
		if i := strings.IndexByte(last, '\n'); i >= 0 {
			args = append(append([]string(nil), args[:n-1]...), last[:i]+"…")
		}
	}
	s := fmt.Sprintf("%s: %v", strings.Join(args, " "), e.Err)
	if e.Stderr != "" {
		s += ": " + e.Stderr
	}
	return s
}

func (e *CmdError) Unwrap() error { return e.Err }

// ExitCode is the command's exit status, or -1 when it did not exit normally.
func (e *CmdError) ExitCode() int {
	var ee *exec.ExitError
	if errors.As(e.Err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// cleanEnv keeps the test process's environment (proxies, GOFLAGS, a
// developer's ssh agent) out of commands that run on hosts.
var cleanEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"USER=root",
	"LOGNAME=root",
	"LANG=C.UTF-8",
	"SHELL=/bin/sh",
	"TERM=dumb",
}
