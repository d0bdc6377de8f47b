package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/homelab/rack/internal/procstat"
)

// rebootFlag re-executes this binary as the detached half of a reboot.
const rebootFlag = "--fakeinit-reboot"

const sshdPath = "/usr/sbin/sshd"

// cmdReboot simulates a reboot: every running unit stops now; then a
// detached helper takes sshd down (dropping the caller's ssh session, as a
// real reboot does), brings it back after a second, counts the boot and
// starts every enabled unit.
func cmdReboot(stderr io.Writer) int {
	for _, n := range knownUnits() {
		if !running(readState(n)) {
			continue
		}
		lock, err := lockUnit(n)
		if err != nil {
			fmt.Fprintf(stderr, "Failed to stop %s: %v\n", n, err)
			continue
		}
		if err := stopUnit(n); err != nil {
			fmt.Fprintf(stderr, "Failed to stop %s: %v\n", n, err)
		}
		lock.unlock()
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "Failed to reboot: %v\n", err)
		return exitFailure
	}
	logf, err := os.OpenFile(filepath.Join(stateDir, "reboot.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		fmt.Fprintf(stderr, "Failed to reboot: %v\n", err)
		return exitFailure
	}
	defer logf.Close()
	cmd := exec.Command(self, rebootFlag)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: killing the caller's ssh session must not kill it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "Failed to reboot: %v\n", err)
		return exitFailure
	}
	_ = cmd.Process.Release()
	return exitOK
}

func rebootHelper() int {
	logf := func(format string, args ...any) {
		fmt.Printf("%s reboot: %s\n", time.Now().Format(time.StampMilli), fmt.Sprintf(format, args...))
	}
	// Let `systemctl reboot` return to its caller first, as the real one
	// does before the machine goes down.
	time.Sleep(300 * time.Millisecond)
	env := map[string]string{}
	kvs, err := readEnvFile(filepath.Join(stateDir, "sshd.env"))
	if err != nil {
		logf("no sshd.env, so sshd stays as it is: %v", err)
	}
	for _, kv := range kvs {
		env[kv[0]] = kv[1]
	}
	config := env["SSHD_CONFIG"]
	if config != "" {
		killSSHD(env["SSHD_PIDFILE"], config, logf)
	}
	// A real reboot gets a new boot id; rack uses it to know the machine
	// really went down. Bind-mounted inside this host's mount namespace only.
	if err := newBootID(); err != nil {
		logf("boot id: %v", err)
	}
	if err := piCgroups(); err != nil {
		logf("memory cgroup: %v", err)
	}
	time.Sleep(time.Second)
	if config != "" {
		cmd := exec.Command(sshdPath, "-f", config, "-E", filepath.Join(stateDir, "sshd.log"))
		cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
		// sshd daemonizes: Run returns once the listener is on its own.
		if out, err := cmd.CombinedOutput(); err != nil {
			logf("starting sshd: %v: %s", err, out)
		} else {
			logf("sshd started")
		}
	}
	n, err := incrCounter(filepath.Join(stateDir, "boots"))
	if err != nil {
		logf("boot counter: %v", err)
	}
	logf("boot %d", n)
	for _, u := range enabledUnits() {
		code := cmdStart(u, options{}, os.Stdout)
		logf("start %s: exit %d", u, code)
	}
	return exitOK
}

// killSSHD stops the host's sshd listener and kills every session under
// it, which is what the ssh client of whoever asked for the reboot sees.
func killSSHD(pidFile, config string, logf func(string, ...any)) {
	listener := 0
	if b, err := os.ReadFile(pidFile); err == nil {
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if isSSHD(pid, "") {
			listener = pid
		}
	}
	if listener == 0 {
		// No (current) pid file: find the listener by its config path.
		for _, pid := range pids() {
			if isSSHD(pid, config) && !isSSHD(procParent(pid), config) {
				listener = pid
				break
			}
		}
	}
	if listener == 0 {
		logf("sshd is not running")
		return
	}
	start, _ := procStart(listener)
	for _, pid := range descendants(listener) {
		if pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	_ = syscall.Kill(listener, syscall.SIGTERM)
	if !procstat.WaitGone(listener, start, maxStopTimeout) {
		_ = syscall.Kill(listener, syscall.SIGKILL)
		procstat.WaitGone(listener, start, maxStopTimeout)
	}
	logf("sshd (pid %d) stopped", listener)
}

func isSSHD(pid int, config string) bool {
	if pid <= 0 {
		return false
	}
	if _, err := procStart(pid); err != nil {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || !bytes.Contains(cmdline, []byte("sshd")) {
		return false
	}
	return config == "" || bytes.Contains(cmdline, []byte(config))
}

func pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// descendants lists every process below root.
func descendants(root int) []int {
	parent := map[int]int{}
	for _, pid := range pids() {
		parent[pid] = procParent(pid)
	}
	in := map[int]bool{root: true}
	for grew := true; grew; {
		grew = false
		for pid, pp := range parent {
			if !in[pid] && in[pp] {
				in[pid] = true
				grew = true
			}
		}
	}
	delete(in, root)
	out := make([]int, 0, len(in))
	for pid := range in {
		out = append(out, pid)
	}
	return out
}

// newBootID gives the host a fresh /proc/sys/kernel/random/boot_id.
func newBootID() error {
	const procBootID = "/proc/sys/kernel/random/boot_id"
	id, err := os.ReadFile("/proc/sys/kernel/random/uuid")
	if err != nil {
		return err
	}
	file := filepath.Join(stateDir, "boot_id")
	if err := os.WriteFile(file, id, 0o444); err != nil {
		return err
	}
	// Stacked bind mounts would pile up over many reboots: drop the last one.
	_ = exec.Command("umount", procBootID).Run()
	if out, err := exec.Command("mount", "--bind", file, procBootID).CombinedOutput(); err != nil {
		return fmt.Errorf("mount --bind %s: %v: %s", procBootID, err, out)
	}
	return nil
}

// piCgroups models what a Raspberry Pi's kernel does at boot: the memory
// cgroup is on only when cmdline.txt asks for it (cgroup_enable=memory), as
// seen in /proc/cgroups. testrack's MakePi starts a Pi with it off.
func piCgroups() error {
	model, err := os.ReadFile("/sys/firmware/devicetree/base/model")
	if err != nil || !bytes.HasPrefix(model, []byte("Raspberry Pi")) {
		return nil
	}
	cmdline, _ := os.ReadFile("/boot/firmware/cmdline.txt")
	on := "0"
	if bytes.Contains(cmdline, []byte("cgroup_enable=memory")) {
		on = "1"
	}
	file := filepath.Join(stateDir, "cgroups")
	// The kernel's own table, under the bind mount of an earlier boot.
	_ = exec.Command("umount", "/proc/cgroups").Run()
	real, err := os.ReadFile("/proc/cgroups")
	if err != nil {
		return err
	}
	var out []string
	for _, line := range strings.Split(strings.TrimRight(string(real), "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "memory" {
			f[3] = on
			line = strings.Join(f, "\t")
		}
		out = append(out, line)
	}
	if err := os.WriteFile(file, []byte(strings.Join(out, "\n")+"\n"), 0o444); err != nil {
		return err
	}
	if out, err := exec.Command("mount", "--bind", file, "/proc/cgroups").CombinedOutput(); err != nil {
		return fmt.Errorf("mount --bind %s /proc/cgroups: %v: %s", file, err, out)
	}
	return nil
}
