package testcluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// RealKubeletLabel marks Nodes a real kubelet registered (internal/noderuntime);
// kwok leaves them alone.
const RealKubeletLabel = "testrack.homelab/kubelet"

// Kwok is a kwok kept running against an API server that may not be there
// yet or for a while (before rack installs the first server, while a test
// rebuilds it): kwok gives up then, and is started again.
type Kwok struct {
	mu      sync.Mutex
	cmd     *exec.Cmd
	stopped bool
	done    chan struct{}
}

// RunKwok keeps kwok running against the API server at url, with the
// given admin credentials, its files and log in dir, until Stop.
func RunKwok(b Binaries, dir, url string, caPEM, certPEM, keyPEM []byte) (*Kwok, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	kc, err := Kubeconfig(url, caPEM, certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	for name, data := range map[string][]byte{"kubeconfig": kc, "stages.yaml": b.KwokStages} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	args := []string{"--kubeconfig=" + filepath.Join(dir, "kubeconfig"), "--config=" + filepath.Join(dir, "stages.yaml"),
		"--manage-nodes-with-label-selector=!" + RealKubeletLabel,
		"--cidr=" + ClusterCIDR, "--node-lease-duration-seconds=40"}
	sv := &Kwok{done: make(chan struct{})}
	go func() {
		defer close(sv.done)
		for {
			log, err := os.OpenFile(filepath.Join(dir, "kwok.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			if err != nil {
				return
			}
			cmd := exec.Command(b.Kwok, args...)
			cmd.Stdout, cmd.Stderr = log, log
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			sv.mu.Lock()
			if sv.stopped {
				sv.mu.Unlock()
				log.Close()
				return
			}
			err = cmd.Start()
			sv.cmd = cmd
			sv.mu.Unlock()
			if err == nil {
				_ = cmd.Wait()
			} else {
				fmt.Fprintf(log, "testlab: starting kwok: %v\n", err)
			}
			log.Close()
			sv.mu.Lock()
			stopped := sv.stopped
			sv.mu.Unlock()
			if stopped {
				return
			}
			time.Sleep(time.Second)
		}
	}()
	return sv, nil
}

// Stop ends kwok for good.
func (s *Kwok) Stop() {
	s.mu.Lock()
	s.stopped = true
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
	}
	s.mu.Unlock()
	<-s.done
}
