package nodes

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/internal/testrack"
)

func TestRunStreamsAndFails(t *testing.T) {
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	o, _, out := testOptions(env{})
	h := mustConnect(t, ctx, targetFor(r, r.Hosts[0], testrack.SudoUser), o)
	name := r.Hosts[0].Name

	err := h.Run(ctx, Sh("echo one; echo two >&2; printf 'no newline'"), RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, l := range []string{name + " | one\n", name + " | two\n", name + " | no newline\n"} {
		if !strings.Contains(got, l) {
			t.Errorf("output lacks %q: %q", l, got)
		}
	}

	err = h.Run(ctx, Sh("echo working; echo 'disk on fire' >&2; exit 3"), RunOptions{Quiet: true})
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Status != 3 || ee.Node != name || !strings.Contains(ee.StderrTail, "disk on fire") || IsTransient(err) {
		t.Fatalf("want ExitError status 3, got %#v", err)
	}
	if !strings.Contains(err.Error(), "exited with status 3: disk on fire") {
		t.Errorf("message: %v", err)
	}

	b, err := h.Output(ctx, Sh("printf 'a\\nb'"), RunOptions{})
	if err != nil || string(b) != "a\nb" {
		t.Errorf("Output = %q, %v", b, err)
	}
	b, err = h.Output(ctx, Sh("cat"), RunOptions{Stdin: strings.NewReader("from stdin")})
	if err != nil || string(b) != "from stdin" {
		t.Errorf("stdin: %q, %v", b, err)
	}
}

func TestRunCancelClosesSession(t *testing.T) {
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	o, _, _ := testOptions(env{})
	h := mustConnect(t, ctx, targetFor(r, r.Hosts[0], testrack.SudoUser), o)
	const cmd = "sleep 313.25"
	for _, privileged := range []bool{false, true} {
		cctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- h.Run(cctx, Sh(cmd), RunOptions{Privileged: privileged}) }()
		// The sleep itself, by its argv (sh and sudo exec or wrap it).
		testenv.WaitFor(t, testenv.Within(t, 20*time.Second), "the remote sleep to start", func() (bool, string) { return countProcs("sleep\x00313.25\x00") > 0, "" })
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("privileged=%v: want context.Canceled, got %v", privileged, err)
		}
		if !waitUntilQuiet(func() bool { return countProcs("sleep\x00313.25\x00") == 0 }) {
			out, _ := exec.Command("ps", "-eo", "pid,ppid,pgid,sid,stat,args").Output()
			t.Fatalf("privileged=%v: the remote sleep still runs after the cancel:\n%s", privileged, grepLines(string(out), "sleep"))
		}
	}
	// The connection stays usable.
	if err := h.Run(ctx, Sh("true"), RunOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestSudo(t *testing.T) {
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	host := r.Hosts[0]

	t.Run("NOPASSWD", func(t *testing.T) {
		o, _, _ := testOptions(env{})
		h := mustConnect(t, ctx, targetFor(r, host, testrack.SudoUser), o)
		assertIDs(t, ctx, h, "1001\n")
	})
	t.Run("root needs no sudo", func(t *testing.T) {
		o, _, _ := testOptions(env{})
		tg := targetFor(r, host, testrack.RootUser)
		tg.Sudo = boolPtr(true)
		h := mustConnect(t, ctx, tg, o)
		assertIDs(t, ctx, h, "0\n")
	})
	t.Run("password from RACK_SUDO_PASSWORD, never in argv", func(t *testing.T) {
		o, _, _ := testOptions(env{EnvSudoPassword: r.SudoPassword})
		h := mustConnect(t, ctx, targetFor(r, host, testrack.PasswordSudoUser), o)
		scan := scanArgv(r.SudoPassword)
		// The sleep keeps sudo alive while the scanner looks.
		out, err := h.Output(ctx, Sh("sleep 1; id -u"), RunOptions{Privileged: true})
		up, err2 := h.UploadReader(ctx, strings.NewReader("#!/bin/sh\necho hi\n"), 18, "/usr/local/bin/hi", FileOptions{Privileged: true, Mode: 0o755})
		scans, hits := scan.finish()
		if err != nil || string(out) != "0\n" {
			t.Fatalf("privileged id -u = %q, %v", out, err)
		}
		if err2 != nil || !up.Changed {
			t.Fatalf("privileged upload: %+v %v", up, err2)
		}
		if len(hits) > 0 {
			t.Fatalf("the sudo password is in argv: %q", hits)
		}
		if scans < 5 {
			t.Fatalf("only %d scans of /proc: the check proves nothing", scans)
		}
		if out, _ := host.Exec(ctx, "stat -c '%U %a' /usr/local/bin/hi"); string(out) != "root 755\n" {
			t.Errorf("uploaded through password sudo: %q", out)
		}
		if out, err := h.Output(ctx, Sh("id -u"), RunOptions{}); err != nil || string(out) != "1002\n" {
			t.Errorf("unprivileged id -u = %q, %v", out, err)
		}
	})
	t.Run("password needed but not set", func(t *testing.T) {
		o, _, _ := testOptions(env{})
		h := mustConnect(t, ctx, targetFor(r, host, testrack.PasswordSudoUser), o)
		err := h.Run(ctx, Sh("touch /root/should-not-exist"), RunOptions{Privileged: true})
		var se *SudoError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), "sudo needs a password: set RACK_SUDO_PASSWORD") {
			t.Fatalf("want SudoError, got %v", err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		o, _, _ := testOptions(env{EnvSudoPassword: "wrong"})
		h := mustConnect(t, ctx, targetFor(r, host, testrack.PasswordSudoUser), o)
		_, err := h.UploadReader(ctx, strings.NewReader("x"), 1, "/usr/local/bin/x", FileOptions{Privileged: true})
		var se *SudoError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), "rejected the password") {
			t.Fatalf("want SudoError, got %v", err)
		}
	})
	if exists, _ := host.FileExists("/root/should-not-exist"); exists {
		t.Error("a privileged command ran without sudo's consent")
	}
}

func assertIDs(t *testing.T, ctx context.Context, h *Host, unprivileged string) {
	t.Helper()
	if out, err := h.Output(ctx, Sh("id -u"), RunOptions{Privileged: true}); err != nil || string(out) != "0\n" {
		t.Errorf("privileged id -u = %q, %v", out, err)
	}
	if out, err := h.Output(ctx, Sh("id -u"), RunOptions{}); err != nil || string(out) != unprivileged {
		t.Errorf("unprivileged id -u = %q, %v (want %q)", out, err, unprivileged)
	}
}

func waitUntilQuiet(cond func() bool) bool {
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) || strings.Contains(l, "PID") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
