// Command pause is the test rack's pod sandbox process, imported as
// registry.k8s.io/pause:3.6 (the sandbox image containerd 1.6 expects). Like
// the upstream pause it holds the pod's namespaces, sleeps until SIGTERM or
// SIGINT and, as PID 1 of a pod that shares its PID namespace, reaps
// orphaned children.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Several children may have exited behind one SIGCHLD.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
