// Command testrack starts and removes test hosts (see internal/testrack) by
// hand, to try rack against them outside of `go test`. It needs root.
//
//	go run ./scripts/testrack up -n 3 [-pi 0,2] [-model M] -state DIR
//	go run ./scripts/testrack down -state DIR
//	go run ./scripts/testrack clean [--all]
//
// up prints the rack as JSON (also written to DIR/rack.json) and leaves the
// hosts running after it exits; the key passphrase and sudo password are in
// files beside it, never on stdout. down removes them. clean removes hosts
// of test runs that crashed; --all also removes every host started by up.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/homelab/rack/internal/testrack"
)

const usage = `usage:
  testrack up -n N [-pi I,J] [-model MODEL] -state DIR   start N hosts and leave them running
  testrack down -state DIR                               remove the hosts started into DIR
  testrack clean [--all]                                 remove hosts of crashed runs (--all: also those of up)
`

// rackFile is DIR/rack.json; its fields are what scripts read.
type rackFile struct {
	ID                 string            `json:"id"`
	Dir                string            `json:"dir"`
	ClientKey          string            `json:"clientKey"`
	EncryptedClientKey string            `json:"encryptedClientKey"`
	KeyPassphraseFile  string            `json:"keyPassphraseFile"`
	SudoPasswordFile   string            `json:"sudoPasswordFile"`
	KnownHosts         string            `json:"knownHosts"`
	Users              map[string]string `json:"users"`
	Hosts              []hostJSON        `json:"hosts"`
}

type hostJSON struct {
	Name        string `json:"name"`
	Addr        string `json:"addr"`
	Port        int    `json:"port"`
	Fingerprint string `json:"fingerprint"`
	Arch        string `json:"arch"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "up":
		err = up(ctx, args)
	case "down":
		err = down(ctx, args)
	case "clean":
		err = clean(ctx, args)
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return
	default:
		err = usageError(fmt.Sprintf("unknown command %q", cmd))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testrack:", err)
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprint(os.Stderr, usage)
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError string

func (e usageError) Error() string { return string(e) }

func parse(fset *flag.FlagSet, args []string) error {
	fset.SetOutput(os.Stderr)
	if err := fset.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if fset.NArg() > 0 {
		return usageError("unexpected arguments: " + strings.Join(fset.Args(), " "))
	}
	return nil
}

func up(ctx context.Context, args []string) error {
	fset := flag.NewFlagSet("up", flag.ContinueOnError)
	n := fset.Int("n", 3, "number of hosts")
	pi := fset.String("pi", "", "comma-separated host indexes (from 0) that pose as Raspberry Pis")
	model := fset.String("model", testrack.DefaultPiModel, "device-tree model of the Pis")
	state := fset.String("state", "", "directory for rack.json, keys and known_hosts (required)")
	if err := parse(fset, args); err != nil {
		return err
	}
	if *state == "" {
		return usageError("-state DIR is required")
	}
	var pis []int
	for _, s := range strings.Split(*pi, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		i, err := strconv.Atoi(s)
		if err != nil {
			return usageError(fmt.Sprintf("-pi: %q is not a host index", s))
		}
		pis = append(pis, i)
	}
	dir, err := filepath.Abs(*state)
	if err != nil {
		return err
	}
	if old, err := readRackFile(dir); err == nil {
		return fmt.Errorf("%s already describes rack %s: run `testrack down -state %s` first", filepath.Join(dir, "rack.json"), old.ID, *state)
	}
	r, err := testrack.Start(ctx, testrack.Options{
		Hosts: *n, Dir: dir, Persistent: true, Pi: pis, PiModel: *model,
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
	})
	if err != nil {
		return err
	}
	rf := rackFile{
		ID: r.ID, Dir: r.Dir,
		ClientKey: r.ClientKey, EncryptedClientKey: r.EncryptedClientKey,
		KeyPassphraseFile: filepath.Join(dir, "key-passphrase"),
		SudoPasswordFile:  filepath.Join(dir, "sudo-password"),
		KnownHosts:        r.KnownHosts,
		Users: map[string]string{
			"root": testrack.RootUser, "sudoNopasswd": testrack.SudoUser, "sudoPassword": testrack.PasswordSudoUser,
		},
	}
	isPi := map[int]bool{}
	for _, i := range pis {
		isPi[i] = true
	}
	for i, h := range r.Hosts {
		arch := "amd64"
		if isPi[i] {
			arch = "arm64"
		}
		rf.Hosts = append(rf.Hosts, hostJSON{h.Name, h.Addr, h.Port, h.Fingerprint(), arch})
	}
	b, err := json.MarshalIndent(rf, "", "  ")
	if err == nil {
		err = errors.Join(
			os.WriteFile(rf.KeyPassphraseFile, []byte(r.KeyPassphrase+"\n"), 0o600),
			os.WriteFile(rf.SudoPasswordFile, []byte(r.SudoPassword+"\n"), 0o600),
			os.WriteFile(filepath.Join(dir, "rack.json"), append(b, '\n'), 0o600),
		)
	}
	if err != nil {
		// Persistent hosts outlive this process: without rack.json nobody
		// could find them again, so do not leave them behind.
		return errors.Join(err, r.Close())
	}
	_, err = os.Stdout.Write(append(b, '\n'))
	return err
}

func readRackFile(dir string) (*rackFile, error) {
	b, err := os.ReadFile(filepath.Join(dir, "rack.json"))
	if err != nil {
		return nil, err
	}
	var rf rackFile
	if err := json.Unmarshal(b, &rf); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "rack.json"), err)
	}
	if rf.ID == "" {
		return nil, fmt.Errorf("%s: no rack id", filepath.Join(dir, "rack.json"))
	}
	return &rf, nil
}

func down(ctx context.Context, args []string) error {
	fset := flag.NewFlagSet("down", flag.ContinueOnError)
	state := fset.String("state", "", "directory given to up (required)")
	if err := parse(fset, args); err != nil {
		return err
	}
	if *state == "" {
		return usageError("-state DIR is required")
	}
	dir, err := filepath.Abs(*state)
	if err != nil {
		return err
	}
	rf, err := readRackFile(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no rack in %s (no rack.json)", *state)
	}
	if err != nil {
		return err
	}
	removed, err := testrack.Remove(ctx, rf.ID)
	for _, name := range removed {
		fmt.Println("removed", name)
	}
	if err != nil {
		return err
	}
	// Only the files up wrote; DIR itself may hold the user's own things.
	var errs []error
	for _, p := range []string{
		rf.ClientKey, rf.ClientKey + ".pub", rf.EncryptedClientKey, rf.EncryptedClientKey + ".pub",
		rf.KnownHosts, rf.KeyPassphraseFile, rf.SudoPasswordFile, filepath.Join(dir, "rack.json"),
	} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func clean(ctx context.Context, args []string) error {
	fset := flag.NewFlagSet("clean", flag.ContinueOnError)
	all := fset.Bool("all", false, "also remove hosts started by up")
	if err := parse(fset, args); err != nil {
		return err
	}
	removed, err := testrack.Clean(ctx, *all, func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
	for _, name := range removed {
		fmt.Println("removed", name)
	}
	return err
}
