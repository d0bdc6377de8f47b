// Command racknode runs a real node (internal/noderuntime) inside a test
// host, for tests and for people exploring a test rack; the fake k3s calls
// the same library. Run it in the host's namespaces:
//
//	nsenter --target <holder pid> --mount --net --uts -- racknode run -config node.json
//	racknode killall -config node.json   # what k3s-killall.sh does
//	racknode get URL                     # a curl stand-in for test hosts
//
// run prints "ready <pod CIDR>" once the node is up and, on SIGTERM or
// SIGINT, stops it (-keep-pods: processes only, like `systemctl stop k3s`;
// default: everything, like k3s-killall.sh).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/homelab/rack/internal/noderuntime"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: racknode run|killall -config FILE | racknode get URL")
		os.Exit(2)
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	switch os.Args[1] {
	case "run", "killall":
		fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
		path := fs.String("config", "", "node configuration (JSON of noderuntime.Config)")
		keep := fs.Bool("keep-pods", false, "on SIGTERM stop the processes only, leaving pods running")
		_ = fs.Parse(os.Args[2:])
		cfg, err := readConfig(*path)
		if err != nil {
			log.Fatal(err)
		}
		if os.Args[1] == "killall" {
			if err := noderuntime.KillAll(context.Background(), cfg); err != nil {
				log.Fatal(err)
			}
			return
		}
		os.Exit(run(cfg, *keep))
	case "get":
		if len(os.Args) != 3 {
			log.Fatal("usage: racknode get URL")
		}
		hc := &http.Client{Timeout: 5 * time.Second}
		resp, err := hc.Get(os.Args[2])
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("%d %s", resp.StatusCode, body)
	default:
		log.Fatalf("unknown command %q", os.Args[1])
	}
}

func readConfig(path string) (noderuntime.Config, error) {
	var cfg noderuntime.Config
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, err
	}
	return cfg, json.Unmarshal(b, &cfg)
}

func run(cfg noderuntime.Config, keepPods bool) int {
	cfg.Logf = log.Printf
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	n, err := noderuntime.Start(ctx, cfg)
	if err != nil {
		log.Print(err)
		return 1
	}
	fmt.Printf("ready %s\n", n.PodCIDR)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	code := 0
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			if err := n.Alive(); err != nil {
				log.Print(err)
				code = 1
				break loop
			}
		}
	}
	end, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if keepPods {
		err = n.Stop(end)
	} else {
		err = n.KillAll(end)
	}
	if err != nil {
		log.Print(err)
		return 1
	}
	log.Print("stopped")
	return code
}
