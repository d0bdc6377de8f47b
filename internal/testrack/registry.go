package testrack

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/homelab/rack/internal/flock"
	"github.com/homelab/rack/internal/procstat"
)

// Machine-wide names. Every rack on the machine, from any process, shares
// the bridge and the registry; the lock serialises changes to both.
const (
	// BridgeName is the bridge in the root network namespace that all hosts'
	// veths are enslaved to.
	BridgeName = "rackbr0"
	// BridgeAddr is the root namespace's address on the bridge. 198.18.0.0/15
	// is reserved for benchmarking (RFC 2544), so it never collides with a
	// user's LAN.
	BridgeAddr = "198.18.0.1"
	// NamePrefix starts every host name, which doubles as its netns name,
	// root-side veth name and hostname.
	NamePrefix = "testrack-"

	stateRoot   = "/run/rack-testrack"
	hostsDir    = stateRoot + "/hosts"
	lockPath    = stateRoot + "/lock"
	bridgeCIDR  = BridgeAddr + "/16"
	bridgeMAC   = "02:72:62:00:00:01"
	maxHostIdx  = 65533
	entryFile   = "entry.json"
	lockTimeout = 2 * time.Minute
)

// entry is a host's record in the registry, hostsDir/<name>/entry.json.
type entry struct {
	Name   string `json:"name"`
	Index  int    `json:"index"`
	Addr   string `json:"addr"`
	RackID string `json:"rackID"`
	// Persistent hosts belong to a human (scripts/testrack up), not to a
	// process; only Remove or Clean(all) deletes them.
	Persistent bool   `json:"persistent"`
	OwnerPID   int    `json:"ownerPID"`
	OwnerStart uint64 `json:"ownerStart"`
	BootID     string `json:"bootID"`
	HolderPID  int    `json:"holderPID,omitempty"`
	SSHDPID    int    `json:"sshdPID,omitempty"`
	Created    string `json:"created"`
}

// stale reports whether nobody can clean up this host any more.
func (e *entry) stale(boot string) bool {
	if e.BootID != boot {
		return true // namespaces did not survive the reboot; PIDs mean nothing
	}
	if e.Persistent {
		return false
	}
	return !procstat.Alive(e.OwnerPID, e.OwnerStart)
}

func readEntry(name string) (*entry, error) {
	b, err := os.ReadFile(filepath.Join(hostsDir, name, entryFile))
	if err != nil {
		return nil, err
	}
	var e entry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("registry entry %s: %w", name, err)
	}
	return &e, nil
}

// writeEntry replaces the record atomically: other processes read it under
// the lock, but the PID updates after sshd restarts are written without it.
func writeEntry(e *entry) error {
	dir := filepath.Join(hostsDir, e.Name)
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, entryFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, entryFile))
}

// registeredNames lists the host directories in the registry.
func registeredNames() ([]string, error) {
	ents, err := os.ReadDir(hostsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), NamePrefix) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// lockMachine takes the flock that serialises registry and bridge changes
// between all processes on the machine.
func lockMachine(ctx context.Context) (*flock.Lock, error) {
	// sshd reads each user's authorized_keys file in the registry with that
	// user's uid, so the path must be traversable by everyone (the keys and
	// the lock themselves stay root-only or public as they need).
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{stateRoot, 0o755}, {hostsDir, 0o711}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return nil, err
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, lockTimeout)
	defer cancel()
	return flock.Acquire(ctx, lockPath)
}

// hostAddr maps a host index to its address: index 1 is 198.18.0.2, right
// after the bridge.
func hostAddr(idx int) string {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, (198<<24|18<<16)+uint32(idx)+1)
	return ip.String()
}

// usableIdx skips addresses ending in .0 or .255: valid in a /16, but some
// tools (and people) take them for network or broadcast addresses.
func usableIdx(idx int) bool {
	low := (idx + 1) & 0xff
	return low != 0 && low != 0xff
}

// hostMAC is derived from the index so a reused address keeps its MAC and
// the root namespace's ARP cache never points at a vanished veth.
func hostMAC(idx int) string {
	return fmt.Sprintf("02:72:74:%02x:%02x:%02x", idx>>16&0xff, idx>>8&0xff, idx&0xff)
}

// reserve allocates n free host slots for rack and records them. Must hold
// the machine lock.
func reserve(n int, rackID string, persistent bool) ([]*entry, error) {
	self := os.Getpid()
	me, err := readProc(self)
	if err != nil {
		return nil, err
	}
	boot := bootID()
	var out []*entry
	for idx := 1; len(out) < n; idx++ {
		if idx > maxHostIdx {
			return out, fmt.Errorf("no free host slots in %s", hostsDir)
		}
		if !usableIdx(idx) {
			continue
		}
		name := NamePrefix + strconv.Itoa(idx)
		// Mkdir is the claim: it fails when another rack holds the slot.
		if err := os.Mkdir(filepath.Join(hostsDir, name), 0o700); err != nil {
			if errors.Is(err, os.ErrExist) {
				continue
			}
			return out, err
		}
		e := &entry{
			Name: name, Index: idx, Addr: hostAddr(idx), RackID: rackID,
			Persistent: persistent, OwnerPID: self, OwnerStart: me.start, BootID: boot,
			Created: time.Now().UTC().Format(time.RFC3339),
		}
		if persistent {
			e.OwnerPID, e.OwnerStart = 0, 0
		}
		out = append(out, e)
		if err := writeEntry(e); err != nil {
			return out, err
		}
	}
	return out, nil
}

// teardownHost removes everything a host consists of, whatever state a
// crash left it in, and then its registry directory. Must hold the machine
// lock.
func teardownHost(ctx context.Context, name, addr string) error {
	if err := teardownNetwork(ctx, name, addr); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Join(hostsDir, name))
}

// teardownNetwork kills every process in a host's netns (holder, sshd,
// sessions, anything a test started there) and removes the veth pair, the
// netns and the root namespace's ARP entry for the address. It does not
// rely on recorded PIDs, which a crash may have left out of date.
func teardownNetwork(ctx context.Context, name, addr string) error {
	var errs []error
	if err := killNetns(name); err != nil {
		errs = append(errs, err)
	}
	// Deleting the root-side veth synchronously removes the pair; leaving it
	// to the netns teardown is asynchronous and the name could still be taken
	// when the next rack wants it.
	if linkExists(name) {
		if err := run(ctx, "ip", "link", "del", name); err != nil && linkExists(name) {
			errs = append(errs, err)
		}
	}
	if _, err := os.Stat("/run/netns/" + name); err == nil {
		if err := run(ctx, "ip", "netns", "del", name); err != nil {
			errs = append(errs, err)
		}
	}
	if addr != "" && linkExists(BridgeName) {
		_ = run(ctx, "ip", "neigh", "del", addr, "dev", BridgeName)
	}
	return errors.Join(errs...)
}

func linkExists(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name)
	return err == nil
}

// sweep tears down stale hosts (and, with all, persistent ones) plus any
// netns or veth with the rack's prefix that the registry does not know, and
// removes the bridge when no host is left. Must hold the machine lock.
func sweep(ctx context.Context, all bool, logf func(string, ...any)) ([]string, error) {
	names, err := registeredNames()
	if err != nil {
		return nil, err
	}
	boot := bootID()
	known := map[string]bool{}
	var removed []string
	var errs []error
	for _, name := range names {
		e, err := readEntry(name)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		// An entry without a record is a reservation its owner did not finish
		// writing before it died (the lock makes it impossible otherwise).
		if e != nil && !e.stale(boot) && !(all && e.Persistent) {
			known[name] = true
			continue
		}
		addr := ""
		if e != nil {
			addr = e.Addr
		}
		logf("testrack: removing host %s (%s)", name, describeOwner(e))
		if err := teardownHost(ctx, name, addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			known[name] = true
			continue
		}
		removed = append(removed, name)
	}
	// Orphans: a netns or link named like a host but with no registry entry
	// (say, the registry directory was deleted by hand).
	orphans := map[string]bool{}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), NamePrefix) && !known[e.Name()] {
				orphans[e.Name()] = true
			}
		}
	}
	if ents, err := os.ReadDir("/sys/class/net"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), NamePrefix) && !known[e.Name()] {
				orphans[e.Name()] = true
			}
		}
	}
	for name := range orphans {
		logf("testrack: removing orphaned namespace/link %s", name)
		if err := teardownHost(ctx, name, ""); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		removed = append(removed, name)
	}
	if err := removeBridgeIfUnused(ctx); err != nil {
		errs = append(errs, err)
	}
	sort.Strings(removed)
	return removed, errors.Join(errs...)
}

func describeOwner(e *entry) string {
	switch {
	case e == nil:
		return "unfinished reservation"
	case e.Persistent:
		return "persistent, rack " + e.RackID
	default:
		return fmt.Sprintf("owner pid %d is gone", e.OwnerPID)
	}
}

// ensureBridge creates or repairs the shared bridge. The MAC is fixed
// because a bridge otherwise takes the lowest MAC of its ports and changes
// it as hosts come and go, which leaves stale ARP entries in every other
// host. Must hold the machine lock.
func ensureBridge(ctx context.Context) error {
	if !linkExists(BridgeName) {
		if err := run(ctx, "ip", "link", "add", BridgeName, "address", bridgeMAC, "type", "bridge"); err != nil {
			return err
		}
	}
	if err := run(ctx, "ip", "addr", "replace", bridgeCIDR, "dev", BridgeName); err != nil {
		return err
	}
	return run(ctx, "ip", "link", "set", BridgeName, "up")
}

// removeBridgeIfUnused deletes the bridge once no host is registered, so a
// machine without running racks carries no trace of them. Must hold the
// machine lock.
func removeBridgeIfUnused(ctx context.Context) error {
	names, err := registeredNames()
	if err != nil || len(names) > 0 || !linkExists(BridgeName) {
		return err
	}
	return run(ctx, "ip", "link", "del", BridgeName)
}
