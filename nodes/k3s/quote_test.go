package k3s

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/homelab/rack/internal/shtest"
	"github.com/homelab/rack/internal/testrack"
	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
)

// TestCommandBuildersOnAHost: every remote command this package builds keeps
// hostile values as values on a real /bin/sh, and running them with such
// values (folders to create, files to back up and remove, folders to probe)
// does exactly that and nothing else.
func TestCommandBuildersOnAHost(t *testing.T) {
	t.Parallel()
	r := testrack.New(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tg, err := nodes.Resolver{Home: r.Dir, SSHConfig: "none"}.Resolve(inventory.Node{Name: "h", Address: r.Hosts[0].Addr,
		SSH: inventory.SSH{User: testrack.SudoUser, IdentityFile: r.ClientKey, KnownHosts: r.KnownHosts}})
	if err != nil {
		t.Fatal(err)
	}
	h, err := nodes.Connect(ctx, tg, nodes.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	run := func(ctx context.Context, c shtest.Cmd) ([]byte, error) {
		return h.Output(ctx, nodes.Sh(c.Script, c.Args...), nodes.RunOptions{Privileged: true, Quiet: true})
	}
	as := func(c nodes.Cmd) shtest.Cmd { return shtest.Cmd(c) }
	shtest.Prepare(t, ctx, run)
	server := inventory.Node{Name: "s", Role: "server"}
	builders := []shtest.Builder{
		{Name: "mkdirCmd", Arity: 2, Build: func(v []string) shtest.Cmd { return as(mkdirCmd(v[0], v[1])) }},
		{Name: "removeCmd", Arity: 3, Build: func(v []string) shtest.Cmd { return as(removeCmd(v...)) }},
		{Name: "backupCmd", Arity: 1, Build: func(v []string) shtest.Cmd { return as(backupCmd(v[0])) }},
		{Name: "probeCmd", Arity: 5, Build: func(v []string) shtest.Cmd { return as(probeCmd(v[0], v[1], v[2:])) }},
		{Name: "kubeconfigCmd", Arity: 0, Build: func([]string) shtest.Cmd { return as(kubeconfigCmd) }},
	}
	for _, init := range []string{InitSystemd, InitOpenRC} {
		u, err := ServiceUnit(server, init)
		if err != nil {
			t.Fatal(err)
		}
		for name, c := range map[string]nodes.Cmd{"Enable": u.Enable, "Restart": u.Restart, "Stop": u.Stop, "Logs": u.Logs} {
			builders = append(builders, shtest.Builder{Name: init + "." + name, Arity: 0, Build: func([]string) shtest.Cmd { return as(c) }})
		}
	}
	shtest.CheckBuilders(t, ctx, run, builders, shtest.Hostile(11, 300))

	// The real commands, with hostile folder and file names in a scratch folder.
	scratch := "/tmp/rack-shtest-scratch"
	if _, err := run(ctx, as(nodes.Sh(`rm -rf -- "$1" && mkdir -- "$1"`, scratch))); err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for i, v := range shtest.Hostile(11, 40) {
		if v == "" {
			continue
		}
		// A folder name cannot hold '/'; keep the rest as it is.
		name := []byte(v)
		for j := range name {
			if name[j] == '/' {
				name[j] = '_'
			}
		}
		dir := scratch + "/" + strconv.Itoa(i) + "-" + string(name)
		if err := h.Run(ctx, mkdirCmd(dir, "0750"), nodes.RunOptions{Privileged: true, Quiet: true}); err != nil {
			t.Fatalf("mkdir %q: %v", dir, err)
		}
		dirs = append(dirs, dir)
		if _, err := run(ctx, as(nodes.Sh(`[ -d "$1" ] && [ "$(stat -c %a -- "$1")" = 750 ]`, dir))); err != nil {
			t.Errorf("mkdir %q did not make exactly that folder, 0750", dir)
		}
		file := dir + "/cmdline.txt"
		if _, err := run(ctx, as(nodes.Sh(`echo original > "$1"`, file))); err != nil {
			t.Fatal(err)
		}
		if err := h.Run(ctx, backupCmd(file), nodes.RunOptions{Privileged: true, Quiet: true}); err != nil {
			t.Fatalf("backup %q: %v", file, err)
		}
		if err := h.Run(ctx, removeCmd(file), nodes.RunOptions{Privileged: true, Quiet: true}); err != nil {
			t.Fatalf("remove %q: %v", file, err)
		}
		if out, err := run(ctx, as(nodes.Sh(`cat -- "$1.rack-backup"; [ ! -e "$1" ]`, file))); err != nil || string(out) != "original\n" {
			t.Errorf("backup and remove of %q: %q %v", file, out, err)
		}
	}
	// The probe reports each existing folder by its index: a half of them.
	probeDirs := append(append([]string{}, dirs...), scratch+"/missing;"+dirs[0])
	out, err := h.Output(ctx, probeCmd("k3s", "/nonexistent", probeDirs), nodes.RunOptions{Privileged: true, Quiet: true})
	if err != nil {
		t.Fatal(err)
	}
	obs := parseProbe(out, probeDirs)
	for _, d := range dirs {
		if !obs.HaveDirs[d] {
			t.Errorf("probe missed %q", d)
		}
	}
	if obs.HaveDirs[probeDirs[len(probeDirs)-1]] || len(obs.HaveDirs) != len(dirs) {
		t.Errorf("probe found %d folders, want %d", len(obs.HaveDirs), len(dirs))
	}
	shtest.CheckNothingRan(t, ctx, run)
}
