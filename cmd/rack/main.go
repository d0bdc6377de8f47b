// Command rack provisions a homelab k3s cluster from one inventory file.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
