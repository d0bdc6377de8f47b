package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The supervisor is this binary re-executed as `systemctl
// --fakeinit-supervise UNIT`, detached in a session of its own. It plays
// systemd's part for one unit: runs ExecStartPre= and ExecStart=, waits for
// READY=1 on Type=notify, restarts per Restart=, and on SIGTERM (a stop)
// stops the main process. It reports the start job's outcome on fd 3 to the
// `systemctl start` that spawned it.
const supervisorFlag = "--fakeinit-supervise"

// Messages on the start-job pipe.
const (
	jobDone    = "done"
	jobFailed  = "failed"
	jobTimeout = "timeout"
)

type supervisor struct {
	unit    string
	report  *os.File // start-job pipe; nil once answered
	stopReq chan os.Signal
	st      state
	logf    func(format string, args ...any)
}

func supervise(unitName string) int {
	// fd 3 is the start-job pipe; it must not leak into the service.
	syscall.CloseOnExec(3)
	s := &supervisor{unit: unitName, report: os.NewFile(3, "job"), stopReq: make(chan os.Signal, 1)}
	signal.Notify(s.stopReq, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	// Notes go to the unit's log (our stdout), like systemd's own lines
	// in a unit's journal.
	s.logf = func(format string, args ...any) {
		fmt.Printf("%s fakeinit[%d]: %s\n", time.Now().Format(time.StampMilli), os.Getpid(), fmt.Sprintf(format, args...))
	}
	me, _ := procStart(os.Getpid())
	s.st = state{Supervisor: os.Getpid(), SupervisorStart: me}

	for {
		outcome := s.runOnce()
		if outcome == outcomeStopped {
			return 0
		}
		u, err := loadUnit(s.unit)
		restart := err == nil && shouldRestart(u.restart, s.st.Result)
		if !restart {
			if s.st.Result == "success" {
				s.finish("inactive", "dead", "success", jobFailed)
			} else {
				s.finish("failed", "failed", s.st.Result, jobFailed)
			}
			return 0
		}
		s.answer(jobFailed) // the start job failed even though a restart follows
		s.set("activating", "auto-restart")
		s.logf("%s: scheduled restart in %v (Restart=%s)", s.unit, u.restartDelay, u.restart)
		select {
		case <-s.stopReq:
			s.finish("inactive", "dead", "success", jobFailed)
			return 0
		case <-time.After(max(u.restartDelay, 100*time.Millisecond)):
		}
		s.st.Restarts++
	}
}

type outcome int

const (
	outcomeExited outcome = iota
	outcomeStopped
)

// runOnce starts the service once and returns when it has exited or was
// stopped. s.st.Result says how it ended.
func (s *supervisor) runOnce() outcome {
	u, err := loadUnit(s.unit)
	if err != nil {
		s.logf("%v", err)
		s.st.Result = "resources"
		return outcomeExited
	}
	env, envMap, err := u.environment()
	if err != nil {
		s.logf("%s: %v", u.name, err)
		s.st.Result = "resources"
		return outcomeExited
	}
	var notify *net.UnixConn
	if u.typ == "notify" {
		// A fresh socket per run: a READY=1 from a previous run's process
		// must not count for this one.
		if notify, err = s.notifySocket(); err != nil {
			s.logf("%s: notify socket: %v", u.name, err)
			s.st.Result = "resources"
			return outcomeExited
		}
		defer notify.Close()
		env = append(env, "NOTIFY_SOCKET="+notify.LocalAddr().String())
	}
	env = append(env, "INVOCATION_ID="+invocationID())

	s.set("activating", "start-pre")
	for _, c := range u.execPre {
		code, err := s.runPre(u, c, env, envMap)
		if err == errStopped {
			return s.stopped()
		}
		if err != nil || code != 0 {
			s.logf("%s: ExecStartPre=%s failed: status=%d %v", u.name, c.raw, code, errOrEmpty(err))
			if !c.ignoreFail {
				s.st.Result, s.st.ExitStatus = "exit-code", code
				return outcomeExited
			}
		}
	}

	cmd, err := s.command(u, u.execStart[len(u.execStart)-1], env, envMap)
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		s.logf("%s: failed to execute %s: %v", u.name, u.execStart[len(u.execStart)-1].raw, err)
		s.st.Result, s.st.ExitStatus = "exit-code", 203 // systemd's EXIT_EXEC
		return outcomeExited
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s.st.MainPID = cmd.Process.Pid
	s.st.MainStart, _ = procStart(cmd.Process.Pid)
	_, _ = incrCounter(statePath(s.unit, ".starts"))
	s.set("activating", "start")

	ready := make(chan struct{})
	var timeout <-chan time.Time
	switch u.typ {
	case "notify":
		go s.waitReady(notify, u.notifyAccess, cmd.Process.Pid, ready)
		if u.startTO > 0 {
			timeout = time.After(u.startTO)
		}
	case "oneshot":
		// Active only after it has finished; handled at exit below.
	default:
		close(ready)
	}
	for {
		select {
		case <-ready:
			ready = nil
			timeout = nil
			s.set("active", "running")
			s.answer(jobDone)
		case <-timeout:
			s.logf("%s: start operation timed out; terminating", u.name)
			s.kill(u, cmd, exited)
			s.st.Result = "timeout"
			s.answer(jobTimeout)
			return outcomeExited
		case <-s.stopReq:
			s.set("deactivating", "stop-sigterm")
			s.kill(u, cmd, exited)
			return s.stopped()
		case err := <-exited:
			s.st.MainPID, s.st.MainStart = 0, 0
			code, sig := exitStatus(cmd, err)
			s.st.ExitStatus = code
			switch {
			case sig != "":
				s.st.Result = "signal"
				s.logf("%s: main process exited, code=killed, status=%s", u.name, sig)
			case code != 0:
				s.st.Result = "exit-code"
				s.logf("%s: main process exited, code=exited, status=%d/FAILURE", u.name, code)
			default:
				s.st.Result = "success"
				s.logf("%s: main process exited, code=exited, status=0/SUCCESS", u.name)
			}
			if u.typ == "oneshot" && s.st.Result == "success" {
				s.answer(jobDone)
				if u.remain {
					s.set("active", "exited")
					<-s.stopReq
					return s.stopped()
				}
			}
			return outcomeExited
		}
	}
}

var errStopped = errors.New("stopped")

// runPre runs one ExecStartPre= to completion; a stop request kills it.
func (s *supervisor) runPre(u *unit, c command, env []string, envMap map[string]string) (int, error) {
	cmd, err := s.command(u, c, env, envMap)
	if err != nil {
		return -1, err
	}
	if err := cmd.Start(); err != nil {
		return -1, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		code, _ := exitStatus(cmd, err)
		return code, nil
	case <-s.stopReq:
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		return -1, errStopped
	}
}

func (s *supervisor) command(u *unit, c command, env []string, envMap map[string]string) (*exec.Cmd, error) {
	path, argv, err := c.argv(envMap)
	if err != nil {
		return nil, err
	}
	if !filepath.IsAbs(path) {
		if path, err = exec.LookPath(path); err != nil {
			return nil, err
		}
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Env: env, Dir: "/"}
	if u.workDir != "" {
		cmd.Dir = u.workDir
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr // the unit's log
	// Own process group: KillMode=control-group kills the group, which is
	// the closest thing to a cgroup without systemd.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd, nil
}

// kill stops the main process per KillMode: SIGTERM, then SIGKILL after
// the stop timeout.
func (s *supervisor) kill(u *unit, cmd *exec.Cmd, exited <-chan error) {
	pid := cmd.Process.Pid
	target := -pid // the process group
	if u.killMode == "process" || u.killMode == "mixed" {
		target = pid
	}
	if u.killMode != "none" {
		_ = syscall.Kill(target, syscall.SIGTERM)
	}
	select {
	case <-exited:
		if u.killMode == "mixed" || u.killMode == "control-group" {
			_ = syscall.Kill(-pid, syscall.SIGKILL) // leftovers in the group
		}
		return
	case <-time.After(u.stopTO):
	}
	s.logf("%s: State 'stop-sigterm' timed out. Killing.", u.name)
	if u.killMode == "process" {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	} else {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	<-exited
}

func (s *supervisor) stopped() outcome {
	s.st.MainPID, s.st.MainStart = 0, 0
	s.finish("inactive", "dead", "success", jobFailed)
	return outcomeStopped
}

// set records a state transition.
func (s *supervisor) set(active, sub string) {
	if s.st.Active != active {
		s.st.Since = time.Now()
	}
	s.st.Active, s.st.Sub = active, sub
	if err := writeState(s.unit, s.st); err != nil {
		s.logf("writing state: %v", err)
	}
}

// finish records the final state; the supervisor exits right after, and
// answers a start job still waiting.
func (s *supervisor) finish(active, sub, result, job string) {
	s.st.Result = result
	s.set(active, sub)
	s.answer(job)
}

// answer tells the waiting `systemctl start` how its job ended (once).
func (s *supervisor) answer(msg string) {
	if s.report == nil {
		return
	}
	_, _ = s.report.WriteString(msg + "\n")
	s.report.Close()
	s.report = nil
}

// notifySocket is the unit's sd_notify socket, in the state folder.
func (s *supervisor) notifySocket() (*net.UnixConn, error) {
	path := statePath(s.unit, ".notify")
	_ = os.Remove(path)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	// The kernel then names each sender's PID, which NotifyAccess= needs.
	raw, err := c.SyscallConn()
	if err == nil {
		cerr := raw.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
		})
		err = errors.Join(err, cerr)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// waitReady closes ready when READY=1 arrives from a process access
// allows: with systemd's default NotifyAccess=main only the main process
// counts. A service's children inherit NOTIFY_SOCKET unless it keeps it
// from them (k3s and its stand-in do), and some say READY=1 as soon as they
// serve (etcd), long before the service is up; systemd ignores them and so
// must this. It stops reading after READY=1 (or when the socket is closed
// at exit).
func (s *supervisor) waitReady(c *net.UnixConn, access string, mainPID int, ready chan<- struct{}) {
	buf, oob := make([]byte, 4096), make([]byte, syscall.CmsgSpace(syscall.SizeofUcred))
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		pid := senderPID(oob[:oobn])
		switch {
		case access == "none":
			s.logf("Got notification message from PID %d, but reception is disabled", pid)
			continue
		case access != "all" && pid != mainPID:
			s.logf("Got notification message from PID %d, but reception only permitted for main PID %d", pid, mainPID)
			continue
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if line == "READY=1" {
				close(ready)
				return
			}
		}
	}
}

// senderPID is the PID in a message's SCM_CREDENTIALS, or 0.
func senderPID(oob []byte) int {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if cred, err := syscall.ParseUnixCredentials(&m); err == nil {
			return int(cred.Pid)
		}
	}
	return 0
}

func shouldRestart(policy, result string) bool {
	switch policy {
	case "always":
		return true
	case "on-failure":
		return result != "success"
	case "on-abnormal":
		return result == "signal" || result == "timeout"
	case "on-abort":
		return result == "signal"
	}
	return false
}

// exitStatus returns the exit code, or the signal's name when the process
// was killed.
func exitStatus(cmd *exec.Cmd, err error) (int, string) {
	if cmd.ProcessState == nil {
		return -1, ""
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), signalName(ws.Signal())
	}
	return cmd.ProcessState.ExitCode(), ""
}

// signalName is the short name systemd prints ("status=15/TERM").
func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGKILL:
		return "9/KILL"
	case syscall.SIGTERM:
		return "15/TERM"
	case syscall.SIGINT:
		return "2/INT"
	case syscall.SIGHUP:
		return "1/HUP"
	case syscall.SIGSEGV:
		return "11/SEGV"
	case syscall.SIGABRT:
		return "6/ABRT"
	}
	return fmt.Sprintf("%d", int(sig))
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func invocationID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
