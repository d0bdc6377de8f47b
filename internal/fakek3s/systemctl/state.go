package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/homelab/rack/internal/procstat"
)

// Everything the shim keeps lives in the host's private tmpfs over
// /etc/systemd/system, so hosts never see each other's state.
const (
	unitDir  = "/etc/systemd/system"
	stateDir = unitDir + "/.fakeinit"
	// maxStopTimeout bounds SIGTERM-to-SIGKILL on stop.
	maxStopTimeout = 5 * time.Second
)

// state is a unit's runtime state, written by its supervisor.
type state struct {
	Active          string    `json:"active"` // active, activating, deactivating, inactive, failed
	Sub             string    `json:"sub"`    // running, start-pre, auto-restart, stop-sigterm, exited, dead, failed
	Result          string    `json:"result"` // success, exit-code, signal, timeout, resources
	Supervisor      int       `json:"supervisor"`
	SupervisorStart uint64    `json:"supervisorStart"`
	MainPID         int       `json:"mainPID"`
	MainStart       uint64    `json:"mainStart"`
	ExitStatus      int       `json:"exitStatus"`
	Since           time.Time `json:"since"`
	Restarts        int       `json:"restarts"`
}

func statePath(unit, ext string) string { return filepath.Join(stateDir, unit+ext) }

func readState(unit string) state {
	var st state
	b, err := os.ReadFile(statePath(unit, ".state"))
	if err != nil || json.Unmarshal(b, &st) != nil {
		return state{Active: "inactive", Sub: "dead"}
	}
	return st
}

func writeState(unit string, st state) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return writeAtomic(statePath(unit, ".state"), b, 0o644)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := fmt.Sprintf("%s.tmp%d", path, os.Getpid())
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// current is the unit's state as seen now: a recorded state whose
// supervisor is gone (killed with the host, or a reboot) is over.
func current(unit string) state {
	st := readState(unit)
	if st.Supervisor != 0 && procstat.Alive(st.Supervisor, st.SupervisorStart) {
		return st
	}
	if st.Active == "failed" {
		return st
	}
	st.Active, st.Sub = "inactive", "dead"
	return st
}

// running reports whether the unit has a live supervisor.
func running(st state) bool {
	return st.Supervisor != 0 && procstat.Alive(st.Supervisor, st.SupervisorStart)
}

// counter files hold one decimal number.
func readCounter(path string) int {
	b, _ := os.ReadFile(path)
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func incrCounter(path string) (int, error) {
	n := readCounter(path) + 1
	return n, writeAtomic(path, []byte(strconv.Itoa(n)+"\n"), 0o644)
}

// procStart returns the start time of a live, non-zombie process; with the
// PID it identifies a process across PID reuse.
func procStart(pid int) (uint64, error) {
	s, err := procstat.Read(pid)
	if err != nil {
		return 0, err
	}
	if s.Zombie() {
		return 0, errors.New("zombie")
	}
	return s.Start, nil
}

func procParent(pid int) int {
	s, err := procstat.Read(pid)
	if err != nil {
		return 0
	}
	return s.PPID
}

// unitLock serialises start, stop and friends on one unit across the
// systemctl processes that may run at once (a reboot and a test's call).
type unitLock struct{ f *os.File }

func lockUnit(unit string) (*unitLock, error) {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(statePath(unit, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return &unitLock{f}, nil
}

func (l *unitLock) unlock() { l.f.Close() }

// enabledUnits lists units with a symlink in a *.wants or *.requires
// folder, the way `systemctl enable` records them.
func enabledUnits() []string {
	seen := map[string]bool{}
	var out []string
	for _, pat := range []string{"*.wants/*", "*.requires/*"} {
		links, _ := filepath.Glob(filepath.Join(unitDir, pat))
		for _, l := range links {
			name := filepath.Base(l)
			if seen[name] {
				continue
			}
			if _, err := os.Stat(filepath.Join(unitDir, name)); errors.Is(err, fs.ErrNotExist) {
				continue
			}
			seen[name] = true
			out = append(out, name)
		}
	}
	return out
}

// enableLinks are the symlinks that enable u.
func enableLinks(u *unit) []string {
	var links []string
	for _, t := range u.wantedBy {
		links = append(links, filepath.Join(unitDir, t+".wants", u.name))
	}
	for _, t := range u.requiredBy {
		links = append(links, filepath.Join(unitDir, t+".requires", u.name))
	}
	return links
}

// existingLinks are the symlinks that currently enable the unit name.
func existingLinks(name string) []string {
	var out []string
	for _, pat := range []string{"*.wants", "*.requires"} {
		dirs, _ := filepath.Glob(filepath.Join(unitDir, pat))
		for _, d := range dirs {
			p := filepath.Join(d, name)
			if _, err := os.Lstat(p); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// knownUnits are the units with a state file: everything ever started.
func knownUnits() []string {
	files, _ := filepath.Glob(filepath.Join(stateDir, "*.state"))
	var out []string
	for _, f := range files {
		out = append(out, strings.TrimSuffix(filepath.Base(f), ".state"))
	}
	return out
}
