// Command systemctl stands in for systemd on rack's test hosts, which run
// in namespaces without an init system. It manages the unit files in
// /etc/systemd/system the way systemctl does for what rack uses: enable,
// disable, start, stop, restart, is-active, is-enabled, status, show,
// daemon-reload and reboot, with the same output and exit codes. Invoked as
// journalctl it prints a unit's log.
//
// A supervisor process per running unit (this binary, re-executed) plays
// systemd's part; state lives in /etc/systemd/system/.fakeinit, which is
// private to each test host.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/homelab/rack/internal/child"
	"github.com/homelab/rack/internal/procstat"
)

// Exit codes of systemctl (LSB).
const (
	exitOK         = 0
	exitFailure    = 1
	exitNotRunning = 3
	exitNoUnit     = 4 // status: no such unit
	exitNotLoaded  = 5 // start/stop: unit not found
)

func main() {
	if filepath.Base(os.Args[0]) == "journalctl" {
		os.Exit(journalctl(os.Args[1:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 2 && os.Args[1] == supervisorFlag {
		os.Exit(supervise(os.Args[2]))
	}
	if len(os.Args) > 1 && os.Args[1] == rebootFlag {
		os.Exit(rebootHelper())
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	now, quiet, noBlock, value bool
	props                      []string
	lines                      int
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	o.lines = 10
	var words []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--now":
			o.now = true
		case a == "-q" || a == "--quiet":
			o.quiet = true
		case a == "--no-block":
			o.noBlock = true
		case a == "--value":
			o.value = true
		case a == "-p" || a == "--property":
			if i+1 < len(args) {
				i++
				o.props = append(o.props, strings.Split(args[i], ",")...)
			}
		case strings.HasPrefix(a, "--property="):
			o.props = append(o.props, strings.Split(strings.TrimPrefix(a, "--property="), ",")...)
		case a == "-n" || a == "--lines":
			if i+1 < len(args) {
				i++
				o.lines, _ = strconv.Atoi(args[i])
			}
		case strings.HasPrefix(a, "--lines="):
			o.lines, _ = strconv.Atoi(strings.TrimPrefix(a, "--lines="))
		case a == "--no-pager", a == "-l", a == "--full", a == "--system", a == "--no-reload",
			a == "-f", a == "--force", a == "--no-ask-password", a == "--no-legend", a == "--plain":
			// Accepted; nothing to do without a pager, a terminal or D-Bus.
		case strings.HasPrefix(a, "-"):
			fmt.Fprintf(stderr, "systemctl: unrecognized option '%s'\n", a)
			return exitFailure
		default:
			words = append(words, a)
		}
	}
	if len(words) == 0 {
		fmt.Fprintln(stderr, "systemctl (fake init of rack's test hosts): a command is required")
		return exitFailure
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		fmt.Fprintf(stderr, "systemctl: %v\n", err)
		return exitFailure
	}
	verb, names := words[0], words[1:]
	for i, n := range names {
		names[i] = normalize(n)
	}
	needUnits := func() bool {
		if len(names) == 0 {
			fmt.Fprintf(stderr, "Too few arguments.\n")
			return false
		}
		return true
	}
	switch verb {
	case "daemon-reload", "daemon-reexec":
		return exitOK
	case "start", "stop", "restart", "try-restart", "reload-or-restart", "enable", "disable",
		"is-active", "is-enabled", "is-failed", "reset-failed", "show":
		if !needUnits() {
			return exitFailure
		}
	}
	// A test may hold a verb at its gate, to kill its caller right there.
	for _, n := range append([]string{""}, names...) {
		waitGate(verb, n)
	}
	switch verb {
	case "start":
		return each(names, func(n string) int { return cmdStart(n, o, stderr) })
	case "stop":
		return each(names, func(n string) int { return cmdStop(n, stderr) })
	case "restart", "reload-or-restart":
		return each(names, func(n string) int {
			if code := cmdStop(n, stderr); code != exitOK {
				return code
			}
			return cmdStart(n, o, stderr)
		})
	case "try-restart":
		return each(names, func(n string) int {
			if !running(readState(n)) {
				return exitOK
			}
			if code := cmdStop(n, stderr); code != exitOK {
				return code
			}
			return cmdStart(n, o, stderr)
		})
	case "enable":
		return each(names, func(n string) int {
			if code := cmdEnable(n, stderr); code != exitOK || !o.now {
				return code
			}
			return cmdStart(n, o, stderr)
		})
	case "disable":
		return each(names, func(n string) int {
			if code := cmdDisable(n, stderr); code != exitOK || !o.now {
				return code
			}
			return cmdStop(n, stderr)
		})
	case "is-active":
		return anyOK(names, func(n string) (string, bool) {
			a := current(n).Active
			return a, a == "active"
		}, o.quiet, stdout)
	case "is-failed":
		return anyOK(names, func(n string) (string, bool) {
			a := current(n).Active
			return a, a == "failed"
		}, o.quiet, stdout)
	case "is-enabled":
		return cmdIsEnabled(names, o.quiet, stdout, stderr)
	case "reset-failed":
		for _, n := range names {
			if st := readState(n); st.Active == "failed" {
				st.Active, st.Sub = "inactive", "dead"
				_ = writeState(n, st)
			}
		}
		return exitOK
	case "status":
		if len(names) == 0 {
			names = knownUnits()
		}
		return cmdStatus(names, o.lines, stdout, stderr)
	case "show":
		return cmdShow(names, o, stdout)
	case "reboot":
		return cmdReboot(stderr)
	default:
		fmt.Fprintf(stderr, "Unknown command verb '%s'.\n", verb)
		return exitFailure
	}
}

// waitGate blocks while the gate file GatePath(verb, unit) exists, with this
// process's pid in GatePath(...)+".held" so a test can kill it there: the
// moment a run of rack is cut off (Ctrl-C, a dropped link, a power cut)
// between writing a node's files and restarting its service, or between an
// edit of cmdline.txt and the reboot. A test-host stand-in's hook, not rack's.
func waitGate(verb, unit string) {
	gate := gatePath(verb, unit)
	if _, err := os.Stat(gate); err != nil {
		return
	}
	_ = os.WriteFile(gate+".held", []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	for {
		if _, err := os.Stat(gate); err != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// gatePath is stateDir/gate-<verb>[-<unit>].
func gatePath(verb, unit string) string {
	if unit == "" {
		return filepath.Join(stateDir, "gate-"+verb)
	}
	return filepath.Join(stateDir, "gate-"+verb+"-"+unit)
}

// each runs f for every unit and returns the last failure.
func each(names []string, f func(string) int) int {
	code := exitOK
	for _, n := range names {
		if c := f(n); c != exitOK {
			code = c
		}
	}
	return code
}

// anyOK prints each unit's answer and succeeds when one is ok, as
// is-active does.
func anyOK(names []string, f func(string) (string, bool), quiet bool, stdout io.Writer) int {
	code := exitNotRunning
	for _, n := range names {
		s, ok := f(n)
		if !quiet {
			fmt.Fprintln(stdout, s)
		}
		if ok {
			code = exitOK
		}
	}
	return code
}

func cmdStart(name string, o options, stderr io.Writer) int {
	if _, err := loadUnit(name); err != nil {
		if errors.Is(err, errNoUnit) {
			fmt.Fprintf(stderr, "Failed to start %s: Unit %s not found.\n", name, name)
			return exitNotLoaded
		}
		fmt.Fprintf(stderr, "Failed to start %s: %v\n", name, err)
		return exitFailure
	}
	lock, err := lockUnit(name)
	if err != nil {
		fmt.Fprintf(stderr, "Failed to start %s: %v\n", name, err)
		return exitFailure
	}
	defer lock.unlock()
	if running(readState(name)) {
		return exitOK
	}
	result, err := startSupervisor(name, !o.noBlock)
	if err != nil {
		fmt.Fprintf(stderr, "Failed to start %s: %v\n", name, err)
		return exitFailure
	}
	switch result {
	case jobDone, "":
		return exitOK
	case jobTimeout:
		fmt.Fprintf(stderr, "Job for %s failed because a timeout was exceeded.\n", name)
	default:
		fmt.Fprintf(stderr, "Job for %s failed because the control process exited with error code.\n", name)
	}
	fmt.Fprintf(stderr, "See \"systemctl status %s\" and \"journalctl -xeu %s\" for details.\n", name, name)
	return exitFailure
}

// startSupervisor spawns the unit's supervisor, detached, and (wait) returns
// how the start job ended.
func startSupervisor(name string, wait bool) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	logf, err := os.OpenFile(statePath(name, ".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	defer r.Close()
	cmd := exec.Command(self, supervisorFlag, name)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	// The service must not hold the caller's stdout, or whoever reads it
	// (an ssh session, a test's exec) would wait for the service to end.
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return "", err
	}
	_ = cmd.Process.Release()
	if !wait {
		return "", nil
	}
	line, _ := bufio.NewReader(r).ReadString('\n')
	if line == "" {
		return jobFailed, nil // the supervisor died without answering
	}
	return strings.TrimSpace(line), nil
}

func cmdStop(name string, stderr io.Writer) int {
	if _, err := os.Stat(filepath.Join(unitDir, name)); err != nil && !running(readState(name)) {
		fmt.Fprintf(stderr, "Failed to stop %s: Unit %s not loaded.\n", name, name)
		return exitNotLoaded
	}
	lock, err := lockUnit(name)
	if err != nil {
		fmt.Fprintf(stderr, "Failed to stop %s: %v\n", name, err)
		return exitFailure
	}
	defer lock.unlock()
	if err := stopUnit(name); err != nil {
		fmt.Fprintf(stderr, "Failed to stop %s: %v\n", name, err)
		return exitFailure
	}
	return exitOK
}

// stopUnit asks the supervisor to stop the service (it sends SIGTERM,
// then SIGKILL after 5 s) and waits for it. A main process whose
// supervisor died is killed directly. Callers hold the unit lock.
func stopUnit(name string) error {
	st := readState(name)
	if running(st) {
		_ = syscall.Kill(st.Supervisor, syscall.SIGTERM)
		if procstat.WaitGone(st.Supervisor, st.SupervisorStart, 2*maxStopTimeout+2*time.Second) {
			return nil
		}
		_ = syscall.Kill(st.Supervisor, syscall.SIGKILL)
	}
	st = readState(name)
	if st.MainPID != 0 && procstat.Alive(st.MainPID, st.MainStart) {
		_ = syscall.Kill(-st.MainPID, syscall.SIGTERM)
		_ = syscall.Kill(st.MainPID, syscall.SIGTERM)
		if !procstat.WaitGone(st.MainPID, st.MainStart, maxStopTimeout) {
			_ = syscall.Kill(-st.MainPID, syscall.SIGKILL)
			_ = syscall.Kill(st.MainPID, syscall.SIGKILL)
			if !procstat.WaitGone(st.MainPID, st.MainStart, maxStopTimeout) {
				return fmt.Errorf("main process %d survives SIGKILL", st.MainPID)
			}
		}
	}
	st.Active, st.Sub, st.Supervisor, st.MainPID = "inactive", "dead", 0, 0
	st.Since = time.Now()
	return writeState(name, st)
}

func cmdEnable(name string, stderr io.Writer) int {
	u, err := loadUnit(name)
	if errors.Is(err, errNoUnit) {
		fmt.Fprintf(stderr, "Failed to enable unit: Unit file %s does not exist.\n", name)
		return exitFailure
	}
	if err != nil {
		fmt.Fprintf(stderr, "Failed to enable unit: %v\n", err)
		return exitFailure
	}
	links := enableLinks(u)
	if len(links) == 0 {
		fmt.Fprintf(stderr, "The unit files have no installation config (WantedBy=, RequiredBy=, Also=,\n"+
			"Alias= settings in the [Install] section, and DefaultInstance= for template\n"+
			"units). This means they are not meant to be enabled or disabled using systemctl.\n")
		return exitOK
	}
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && target == u.path {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(l), 0o755); err != nil {
			fmt.Fprintf(stderr, "Failed to enable unit: %v\n", err)
			return exitFailure
		}
		_ = os.Remove(l)
		if err := os.Symlink(u.path, l); err != nil {
			fmt.Fprintf(stderr, "Failed to enable unit: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(stderr, "Created symlink '%s' → '%s'.\n", l, u.path)
	}
	return exitOK
}

func cmdDisable(name string, stderr io.Writer) int {
	if _, err := os.Stat(filepath.Join(unitDir, name)); err != nil && len(existingLinks(name)) == 0 {
		fmt.Fprintf(stderr, "Failed to disable unit: Unit file %s does not exist.\n", name)
		return exitFailure
	}
	for _, l := range existingLinks(name) {
		if err := os.Remove(l); err != nil {
			fmt.Fprintf(stderr, "Failed to disable unit: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(stderr, "Removed '%s'.\n", l)
	}
	return exitOK
}

// enabledState is what is-enabled prints for the unit.
func enabledState(name string) (string, error) {
	u, err := loadUnit(name)
	if err != nil {
		return "", err
	}
	if len(existingLinks(name)) > 0 {
		return "enabled", nil
	}
	if !u.hasInstall || len(enableLinks(u)) == 0 {
		return "static", nil
	}
	return "disabled", nil
}

func cmdIsEnabled(names []string, quiet bool, stdout, stderr io.Writer) int {
	code := exitFailure
	for _, n := range names {
		s, err := enabledState(n)
		if errors.Is(err, errNoUnit) {
			if !quiet {
				fmt.Fprintf(stderr, "Failed to get unit file state for %s: No such file or directory\n", n)
			}
			continue
		}
		if err != nil {
			fmt.Fprintf(stderr, "Failed to get unit file state for %s: %v\n", n, err)
			continue
		}
		if !quiet {
			fmt.Fprintln(stdout, s)
		}
		if s == "enabled" || s == "static" {
			code = exitOK
		}
	}
	return code
}

func cmdStatus(names []string, lines int, stdout, stderr io.Writer) int {
	code := exitOK
	for i, n := range names {
		u, err := loadUnit(n)
		if err != nil {
			fmt.Fprintf(stderr, "Unit %s could not be found.\n", n)
			code = exitNoUnit
			continue
		}
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		st := current(n)
		enabled, _ := enabledState(n)
		dot := "○"
		switch st.Active {
		case "active", "activating", "deactivating":
			dot = "●"
		case "failed":
			dot = "×"
		}
		fmt.Fprintf(stdout, "%s %s - %s\n", dot, n, u.description)
		fmt.Fprintf(stdout, "     Loaded: loaded (%s; %s; preset: enabled)\n", u.path, enabled)
		active := fmt.Sprintf("%s (%s)", st.Active, st.Sub)
		if st.Active == "failed" {
			active = fmt.Sprintf("failed (Result: %s)", st.Result)
		}
		if !st.Since.IsZero() {
			active += " since " + st.Since.Format("Mon 2006-01-02 15:04:05 MST") + "; " + ago(st.Since)
		}
		fmt.Fprintf(stdout, "     Active: %s\n", active)
		if running(st) && st.MainPID != 0 {
			comm, _ := os.ReadFile("/proc/" + strconv.Itoa(st.MainPID) + "/comm")
			fmt.Fprintf(stdout, "   Main PID: %d (%s)\n", st.MainPID, strings.TrimSpace(string(comm)))
		}
		if lines > 0 {
			if log := child.Tail(statePath(n, ".log"), lines); log != "" {
				fmt.Fprintf(stdout, "\n%s\n", log)
			}
		}
		if st.Active != "active" && code == exitOK {
			code = exitNotRunning
		}
	}
	return code
}

func ago(t time.Time) string {
	d := time.Since(t).Round(time.Second)
	return d.String() + " ago"
}

// cmdShow prints properties in systemctl show's KEY=VALUE form.
func cmdShow(names []string, o options, stdout io.Writer) int {
	for i, n := range names {
		if i > 0 && !o.value {
			fmt.Fprintln(stdout)
		}
		st := current(n)
		load := "loaded"
		if _, err := loadUnit(n); errors.Is(err, errNoUnit) {
			load = "not-found"
		}
		enabled, _ := enabledState(n)
		mainPID := 0
		if running(st) {
			mainPID = st.MainPID
		}
		props := [][2]string{
			{"Id", n},
			{"LoadState", load},
			{"ActiveState", st.Active},
			{"SubState", st.Sub},
			{"Result", orDefault(st.Result, "success")},
			{"MainPID", strconv.Itoa(mainPID)},
			{"ExecMainStatus", strconv.Itoa(st.ExitStatus)},
			{"NRestarts", strconv.Itoa(st.Restarts)},
			{"UnitFileState", enabled},
		}
		for _, p := range props {
			if len(o.props) > 0 && !slices.Contains(o.props, p[0]) {
				continue
			}
			if o.value {
				fmt.Fprintln(stdout, p[1])
			} else {
				fmt.Fprintf(stdout, "%s=%s\n", p[0], p[1])
			}
		}
	}
	return exitOK
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// journalctl prints unit logs: -u UNIT (repeatable), -n N, -f; other
// options are accepted and ignored.
func journalctl(args []string, stdout, stderr io.Writer) int {
	var units []string
	lines, follow := -1, false
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-u" || a == "--unit":
			if i+1 < len(args) {
				i++
				units = append(units, normalize(args[i]))
			}
		case strings.HasPrefix(a, "--unit="):
			units = append(units, normalize(strings.TrimPrefix(a, "--unit=")))
		case strings.HasPrefix(a, "-u") && len(a) > 2:
			units = append(units, normalize(a[2:]))
		case a == "-n" || a == "--lines":
			if i+1 < len(args) {
				i++
				lines, _ = strconv.Atoi(args[i])
			}
		case strings.HasPrefix(a, "--lines="):
			lines, _ = strconv.Atoi(strings.TrimPrefix(a, "--lines="))
		case a == "-f" || a == "--follow":
			follow = true
		case a == "-xeu" || a == "-eu" || a == "-xu":
			if i+1 < len(args) {
				i++
				units = append(units, normalize(args[i]))
			}
		}
	}
	if len(units) == 0 {
		fmt.Fprintln(stderr, "journalctl (fake init of rack's test hosts): only -u UNIT is supported")
		return exitFailure
	}
	for _, u := range units {
		path := statePath(u, ".log")
		if lines >= 0 {
			if t := child.Tail(path, lines); t != "" {
				fmt.Fprintln(stdout, t)
			}
		} else if b, err := os.ReadFile(path); err == nil {
			_, _ = stdout.Write(b)
		}
	}
	if follow && len(units) == 1 {
		path := statePath(units[0], ".log")
		st, _ := os.Stat(path)
		var off int64
		if st != nil {
			off = st.Size()
		}
		for {
			time.Sleep(200 * time.Millisecond)
			f, err := os.Open(path)
			if err != nil {
				continue
			}
			_, _ = f.Seek(off, io.SeekStart)
			n, _ := io.Copy(stdout, f)
			off += n
			f.Close()
		}
	}
	return exitOK
}
