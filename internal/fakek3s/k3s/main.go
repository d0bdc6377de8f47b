// Command k3s is a fake k3s for rack's test hosts. It behaves like k3s in
// everything rack can observe: `k3s --version`, the config file and flags,
// the node-token and k3s.yaml a server writes, a TLS endpoint on :6443 (a
// TCP forward to the test control plane, whose certificate names every
// test host), the Node it registers, and a join that fails on a wrong
// token. It runs no kubelet and no containers: kwok keeps the Node Ready.
//
// The control plane it fronts is described by the JSON file at
// controlPlaneFile (see package cpfile), which tests write on each host.
//
// Files, on the host it runs on:
//
//	reads   /etc/rancher/k3s/config.yaml (or --config, $K3S_CONFIG_FILE) and config.yaml.d/*.yaml
//	reads   --token-file / --agent-token-file when given
//	reads   <data-dir>/server/token (server restarted without a token)
//	reads   controlPlaneFile (default /etc/rancher/.fake/controlplane.json)
//	writes  <data-dir>/server/{token,node-token,agent-token} (0600; server)
//	writes  /etc/rancher/k3s/k3s.yaml or --write-kubeconfig (0600 unless write-kubeconfig-mode; server)
//	listens 0.0.0.0:6443 or --https-listen-port (server), forwarding to the control plane
//	writes  /etc/rancher/node/password (0600, first start; nodepassword.go)
//	writes  <data-dir>/server/db/snapshots/* (etcd-snapshot save; snapshot.go)
//	writes  <data-dir>/server/db/{etcd,etcd-old-*,reset-flag} (server --cluster-reset; snapshot.go)
//
// <data-dir> is /var/lib/rancher/k3s unless set. In the cluster it creates or
// updates its Node and, on the first server, ConfigMap
// kube-system/k3s-fake-cluster with the token's sha256 (joining nodes
// compare theirs with it). Flags and config keys follow k3s; environment
// variables K3S_TOKEN, K3S_URL, K3S_NODE_NAME and the like are read too.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// Set with -ldflags "-X main.version=v1.33.5+k3s1 -X main.controlPlaneFile=…".
var (
	version          = "v0.0.0+k3s1"
	commit           = "fake0000"
	controlPlaneFile = "/etc/rancher/.fake/controlplane.json"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	log := &logger{w: stderr}
	// Global flags may come before the subcommand, as with urfave/cli.
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "--version", "-v":
			printVersion(stdout)
			return 0
		case "--help", "-h":
			usage(stdout)
			return 0
		case "--debug":
			args = args[1:]
		default:
			fmt.Fprintf(stderr, "Incorrect Usage: flag provided but not defined: %s\n", args[0])
			return 1
		}
	}
	if len(args) == 0 {
		usage(stdout)
		return 0
	}
	switch args[0] {
	case "server", "agent":
		for _, a := range args[1:] {
			if a == "--help" || a == "-h" {
				usage(stdout)
				return 0
			}
		}
		if args[0] == "server" {
			if code, done := resetPreflight(args[1:], log); done {
				return code
			}
		}
		return runNode(args[0], args[1:], log)
	case "version":
		printVersion(stdout)
		return 0
	case "help":
		usage(stdout)
		return 0
	case "etcd-snapshot":
		return runEtcdSnapshot(args[1:], stdout, log)
	default:
		fmt.Fprintf(stderr, "No help topic for '%s'\n", args[0])
		return 3
	}
}

// printVersion prints what `k3s --version` prints.
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "k3s version %s (%s)\ngo version %s\n", version, commit, runtime.Version())
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `NAME:
   k3s - Kubernetes, but small and simple

USAGE:
   k3s [global options] command [command options] [arguments...]

VERSION:
   %s (%s)

COMMANDS:
   server         Run management server
   agent          Run node agent
   etcd-snapshot  Manage etcd snapshots
   help, h        Shows a list of commands or help for one command

GLOBAL OPTIONS:
   --debug        (logging) Turn on debug logs
   --help, -h     show help
   --version, -v  print the version
`, version, commit)
}

// logger writes logrus-style lines, like k3s does on stderr.
type logger struct{ w io.Writer }

func (l *logger) line(level, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(l.w, "time=%q level=%s msg=%q\n", time.Now().UTC().Format(time.RFC3339), level, msg)
}

func (l *logger) infof(format string, args ...any)  { l.line("info", format, args...) }
func (l *logger) warnf(format string, args ...any)  { l.line("warning", format, args...) }
func (l *logger) errorf(format string, args ...any) { l.line("error", format, args...) }
func (l *logger) fatalf(format string, args ...any) { l.line("fatal", format, args...) }
