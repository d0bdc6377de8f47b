package testcluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/homelab/rack/internal/child"

	"github.com/homelab/rack/internal/procstat"
)

// stopGrace is how long a component gets to exit after SIGTERM before
// SIGKILL. The data is thrown away, so nothing is lost by not waiting for
// kube-apiserver's graceful shutdown, which drains watches for 10 s or more.
const stopGrace = time.Second

// spawn starts a component with its output in dir/<name>.log.
func spawn(dir, name, bin string, args ...string) (*child.Proc, error) {
	// kwok reads ~/.kwok/kwok.yaml when it exists; a developer's file there
	// must not change the test cluster.
	return child.Start(name, filepath.Join(dir, name+".log"), bin, args, child.Options{Dir: dir,
		Env: []string{"HOME=" + dir, "KWOK_WORKDIR=" + filepath.Join(dir, "kwok-workdir")}})
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
	find := func() []int {
		return procstat.Pids(func(pid int, args []string) bool {
			if !strings.Contains(strings.Join(args, "\x00"), prefix) {
				return false
			}
			_, err := procStart(pid)
			return err == nil // a zombie's parent reaps it; nothing holds files
		})
	}
	return procstat.KillUntilGone(find, 10*time.Second, "processes of "+prefix+":", nil)
}
