// Command demo runs the test rack behind `make demo`: three test hosts whose
// kubelets, containerd and kube-proxy run real pods (a server and two
// agents, one offering a local volume), a control plane for them, two spare
// addresses on the test network for MetalLB, and an inventory at
// DIR/rack.yaml with the platform (MetalLB, Traefik, local volumes) and a
// sample app exposed through Traefik. The lab lives in a background process
// until `down`.
//
//	go run ./scripts/demo up   [-dir .demo]   start it (returns once it is ready)
//	go run ./scripts/demo down [-dir .demo]   stop it and remove DIR
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/homelab/rack/internal/testlab"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: demo up|down|serve [-dir DIR]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", ".demo", "folder for the demo's inventory, keys and state")
	_ = fs.Parse(os.Args[2:])
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fail(err)
	}
	switch os.Args[1] {
	case "up":
		err = up(abs)
	case "serve":
		err = serve(abs)
	case "down":
		err = down(abs)
	default:
		err = fmt.Errorf("unknown command %q: use up or down", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "demo:", err)
	os.Exit(1)
}

// up starts `serve` detached and waits until it reports ready or failed.
func up(dir string) error {
	if pid := running(dir); pid > 0 {
		fmt.Printf("demo rack already running (pid %d); inventory: %s\n", pid, filepath.Join(dir, "rack.yaml"))
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	os.Remove(filepath.Join(dir, "ready"))
	os.Remove(filepath.Join(dir, "failed"))
	self, err := os.Executable()
	if err != nil {
		return err
	}
	log, err := os.Create(filepath.Join(dir, "demo.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(self, "serve", "-dir", dir)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives make and the terminal
	if err := cmd.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(dir, "ready")); err == nil {
			fmt.Printf("demo rack up: inventory %s (log %s)\n", filepath.Join(dir, "rack.yaml"), log.Name())
			return nil
		}
		if msg, err := os.ReadFile(filepath.Join(dir, "failed")); err == nil {
			return fmt.Errorf("the demo rack did not start: %s(see %s)", msg, log.Name())
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the demo rack did not start within 10 minutes (see %s)", log.Name())
}

// serve builds the lab and holds it until SIGTERM.
func serve(dir string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	lab, err := testlab.Start(ctx, testlab.Spec{Cluster: "demo", Version: "v1.36.5+k3s1", Dir: dir, Logf: logf, Spare: 2, Nodes: []testlab.Node{
		{Name: "pinemaster", Role: "server", Real: true, Labels: map[string]string{"topology.kubernetes.io/zone": "shelf-1"}},
		{Name: "potato-7", Role: "agent", Arch: "amd64", Real: true, LocalPV: "/storage"},
		{Name: "pinecone-1", Role: "agent", Real: true},
	}})
	if err == nil {
		defer lab.Close()
		err = lab.WriteInventory(platform(lab.SparePool()))
	}
	if err != nil {
		_ = os.WriteFile(filepath.Join(dir, "failed"), []byte(err.Error()+"\n"), 0o600)
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "demo.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ready"), nil, 0o600); err != nil {
		return err
	}
	logf("demo rack ready: %s", lab.Inventory)
	<-ctx.Done()
	logf("stopping the demo rack")
	return nil
}

// platform is the demo inventory's addons and app: MetalLB hands out the
// spare addresses, Traefik takes the first, and the sample web server
// (internal/sampleweb, built by scripts/build-images.sh) runs as a canary
// behind it at web.home.arpa.
func platform(pool string) string {
	return fmt.Sprintf(`addons:
  metallb:
    pools:
      - {name: lan, addresses: [%s]}
  traefik: {}
  localPV: {}
apps:
  - name: web
    image: docker.io/homelab/sampleweb:v1
    port: 8080
    replicas: 2
    expose: {host: web.home.arpa}
    strategy: {type: canary, steps: [25, 50, 100], check: /ready}
`, pool)
}

// down stops the lab's process and removes the folder.
func down(dir string) error {
	if pid := running(dir); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(30 * time.Second)
		for running(dir) > 0 && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if running(dir) > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	fmt.Println("demo rack removed")
	return nil
}

// running is the pid of a live demo process for dir, or 0.
func running(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "demo.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !strings.Contains(string(cmdline), "serve") {
		return 0
	}
	return pid
}
