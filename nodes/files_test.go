package nodes

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/internal/testrack"
)

func randomFile(t testing.TB, size int) (string, string) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	p := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return p, hex.EncodeToString(s[:])
}

func remoteSum(t testing.TB, h *testrack.Host, p string) string {
	t.Helper()
	out, err := h.Exec(context.Background(), "sha256sum "+p)
	if err != nil {
		t.Fatalf("sha256sum %s: %v", p, err)
	}
	return strings.Fields(string(out))[0]
}

// listDir lists a remote directory, dot files included.
func listDir(t *testing.T, h *testrack.Host, dir string) string {
	t.Helper()
	out, err := h.Exec(context.Background(), "ls -A "+dir)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// oneHost starts a one-host rack and connects to it as user; the sudo
// password user gets the rack's password. tune, if given, adjusts the
// options first.
func oneHost(t *testing.T, user string, tune ...func(*Options)) (context.Context, *testrack.Host, *Host, *testenv.Buffer) {
	t.Helper()
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	e := env{}
	if user == testrack.PasswordSudoUser {
		e = env{EnvSudoPassword: r.SudoPassword}
	}
	o, logs, _ := testOptions(e)
	for _, f := range tune {
		f(&o)
	}
	return ctx, r.Hosts[0], mustConnect(t, ctx, targetFor(r, r.Hosts[0], user), o), logs
}

func TestUploadDownload(t *testing.T) {
	ctx, host, h, _ := oneHost(t, testrack.SudoUser)
	local, sum := randomFile(t, 8<<20+123)
	const dst = "/usr/local/bin/k3s"

	tr, err := h.UploadFile(ctx, local, dst, FileOptions{Privileged: true, Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Changed || tr.Sent != 8<<20+123 || tr.SHA256 != sum || h.BytesSent() != tr.Sent {
		t.Errorf("first upload: %+v, host sent %d", tr, h.BytesSent())
	}
	if got := remoteSum(t, host, dst); got != sum {
		t.Fatalf("remote sha256 %s, want %s", got, sum)
	}
	if out, _ := host.Exec(ctx, "stat -c '%U:%G %a' "+dst); string(out) != "root:root 755\n" {
		t.Errorf("owner/mode %q", out)
	}

	// Converged: nothing sent, and drifted mode and owner are corrected.
	host.Exec(ctx, "chmod 700 "+dst+" && chown rackuser "+dst)
	before := h.BytesSent()
	tr, err = h.UploadFile(ctx, local, dst, FileOptions{Privileged: true, Mode: 0o755, Owner: "root:root"})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Changed || tr.Sent != 0 || h.BytesSent() != before {
		t.Errorf("converged upload sent bytes: %+v (host total %d → %d)", tr, before, h.BytesSent())
	}
	if out, _ := host.Exec(ctx, "stat -c '%U:%G %a' "+dst); string(out) != "root:root 755\n" {
		t.Errorf("owner/mode not corrected: %q", out)
	}
	if ls := listDir(t, host, "/usr/local/bin"); ls != "k3s" {
		t.Errorf("leftovers in /usr/local/bin: %q", ls)
	}

	// A reader that cannot seek, an owner, a new directory.
	content := bytes.Repeat([]byte("rack "), 100000)
	tr, err = h.UploadReader(ctx, io.MultiReader(bytes.NewReader(content)), int64(len(content)),
		"/var/lib/rancher/deep/dir/file", FileOptions{Privileged: true, Mode: 0o640, Owner: "rackuser:rackuser"})
	if err != nil || !tr.Changed {
		t.Fatalf("reader upload: %+v %v", tr, err)
	}
	if out, _ := host.Exec(ctx, "stat -c '%U:%G %a' /var/lib/rancher/deep/dir/file"); string(out) != "rackuser:rackuser 640\n" {
		t.Errorf("owner/mode %q", out)
	}

	// Download, privileged (the file is root's, 0600).
	host.Exec(ctx, "cp "+dst+" /root/copy && chmod 600 /root/copy")
	out := filepath.Join(t.TempDir(), "sub", "k3s.copy")
	dl, err := h.Download(ctx, "/root/copy", out, FileOptions{Privileged: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	s := sha256.Sum256(b)
	if hex.EncodeToString(s[:]) != sum || dl.SHA256 != sum || dl.Size != 8<<20+123 {
		t.Errorf("download: %+v", dl)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
		t.Errorf("downloaded mode %v", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 1 {
		t.Errorf("local leftovers: %v", ents)
	}
}

func TestWriteSecretFile(t *testing.T) {
	ctx, host, h, _ := oneHost(t, testrack.PasswordSudoUser)
	secret := "K10" + strings.Repeat("deadbeef", 8) + "::server:" + host.Name
	scan := scanArgv(secret)
	var err error
	for i := 0; i < 5 && err == nil; i++ {
		// A different content every time, so each write really travels.
		err = h.WriteSecretFile(ctx, "/etc/rancher/k3s/token", []byte(secret+strings.Repeat("\n", i)), FileOptions{Privileged: true, Mode: 0o644})
	}
	scans, hits := scan.finish()
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) > 0 {
		t.Fatalf("the secret is in argv: %q", hits)
	}
	if scans < 3 {
		t.Fatalf("only %d scans", scans)
	}
	got, _ := host.ReadFile("/etc/rancher/k3s/token")
	if string(got) != secret+"\n\n\n\n" {
		t.Errorf("content %q", got)
	}
	if out, _ := host.Exec(ctx, "stat -c '%U %a' /etc/rancher/k3s/token"); string(out) != "root 600\n" {
		t.Errorf("secret file is %q, want root 600 (a 0644 request is tightened)", out)
	}
}

// slowReaderAt paces reads so a test can act in the middle of a transfer.
type slowReaderAt struct {
	r     io.ReaderAt
	pause time.Duration
}

func (s slowReaderAt) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(s.pause)
	return s.r.ReadAt(p, off)
}

func TestUploadSurvivesSSHDKill(t *testing.T) {
	// Reconnects for about 4 s: sshd comes back once the kill and a
	// restart are done, which took over the default three attempts'
	// 200 ms on a loaded machine.
	ctx, host, h, logs := oneHost(t, testrack.SudoUser, func(o *Options) { o.Attempts = 8 })
	local, sum := randomFile(t, 16<<20)
	src, err := OpenSource(local)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	// 512 reads of 32 KiB, 2 ms each: about a second per attempt.
	slow := &Source{r: slowReaderAt{src.r, 2 * time.Millisecond}, size: src.size, sum: src.sum}
	const dst = "/var/lib/rancher/k3s/agent/images/airgap.tar"

	// The watcher sees the destination during the whole upload: only
	// "absent" or the complete file are allowed.
	stop := make(chan struct{})
	var seen sync.Map
	var watched sync.WaitGroup
	watched.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			out, err := host.Exec(ctx, "if [ -e "+dst+" ]; then sha256sum "+dst+"; else echo absent; fi")
			if err == nil {
				seen.Store(strings.Fields(string(out))[0], true)
			}
		}
	})
	killed := make(chan error, 1)
	go func() {
		for h.BytesSent() < 4<<20 {
			time.Sleep(time.Millisecond)
		}
		if err := host.KillSSHD(); err != nil {
			killed <- err
			return
		}
		killed <- host.StartSSHD()
	}()
	tr, err := h.Upload(ctx, slow, dst, FileOptions{Privileged: true})
	close(stop)
	watched.Wait()
	if kerr := <-killed; kerr != nil {
		t.Fatal(kerr)
	}
	if err != nil {
		t.Fatalf("upload did not survive the sshd kill: %v\n%s", err, logs)
	}
	t.Logf("transfer %+v\n%s", tr, logs)
	if tr.Attempts < 2 || tr.Sent <= 16<<20 {
		t.Errorf("want a retried upload, got %+v", tr)
	}
	if !strings.Contains(logs.String(), "upload interrupted, reconnecting") {
		t.Errorf("the retry was not logged:\n%s", logs)
	}
	if got := remoteSum(t, host, dst); got != sum {
		t.Fatalf("remote sha256 %s, want %s", got, sum)
	}
	seen.Range(func(k, _ any) bool {
		if k != "absent" && k != sum {
			t.Errorf("the watcher saw a partial destination (sha256 %s)", k)
		}
		return true
	})
	if _, ok := seen.Load("absent"); !ok {
		t.Error("the watcher never ran before the rename")
	}
	if ls := listDir(t, host, filepath.Dir(dst)); ls != filepath.Base(dst) {
		t.Errorf("temp files left behind: %q", ls)
	}
}

func TestUploadCancelRemovesTemp(t *testing.T) {
	ctx, host, h, _ := oneHost(t, testrack.PasswordSudoUser)
	local, _ := randomFile(t, 8<<20)
	src, _ := OpenSource(local)
	defer src.Close()
	slow := &Source{r: slowReaderAt{src.r, 2 * time.Millisecond}, size: src.size, sum: src.sum}
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		for h.BytesSent() < 1<<20 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	_, err := h.Upload(cctx, slow, "/usr/local/bin/k3s", FileOptions{Privileged: true})
	if err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("want a cancelled upload, got %v", err)
	}
	if ls := listDir(t, host, "/usr/local/bin"); ls != "" {
		t.Errorf("cancelled upload left %q", ls)
	}
}

// TestUploadSyncsBeforeRename: the file reaches the disk before it is
// renamed into place (fsync@openssh.com), so a power cut on an SD card or a
// Pi's vfat boot partition never leaves the name pointing at nothing. The
// test host's sftp-server logs each request it handles.
func TestUploadSyncsBeforeRename(t *testing.T) {
	ctx, host, h, _ := oneHost(t, testrack.SudoUser)
	if _, err := h.Upload(ctx, BytesSource([]byte("console=tty1 cgroup_enable=memory\n")), "/tmp/cmdline.txt", FileOptions{}); err != nil {
		t.Fatal(err)
	}
	log, err := host.ReadFile(testrack.SFTPLog)
	if err != nil {
		t.Fatal(err)
	}
	fsync := strings.Index(string(log), "fsync")
	rename := strings.Index(string(log), "posix-rename")
	if fsync < 0 || rename < 0 || fsync > rename {
		t.Fatalf("want an fsync before the rename in the sftp-server's log:\n%s", log)
	}
}

// TestUploadRefusesWhatTheHostDidNotStore: the host hashes the upload chunk
// by chunk while it arrives; when what it reads back differs from what was
// sent (here a dd on the host that adds a byte to the second chunk), the
// upload fails naming the bytes at fault, and neither the file nor a temp
// file is left behind.
func TestUploadRefusesWhatTheHostDidNotStore(t *testing.T) {
	ctx, host, h, _ := oneHost(t, testrack.RootUser)
	const size = 20<<20 + 5 // chunks end at 10 MiB, 15 MiB, size
	local, sum := randomFile(t, size)
	const dst = "/var/lib/rancher/file"

	// A clean upload first: three chunks, all verified.
	if tr, err := h.UploadFile(ctx, local, dst, FileOptions{}); err != nil || tr.SHA256 != sum || remoteSum(t, host, dst) != sum {
		t.Fatalf("clean upload: %+v %v", tr, err)
	}
	host.Exec(ctx, "rm -f "+dst)

	// /usr/local/bin is the host's own and comes first in root's PATH.
	if _, err := host.Exec(ctx, `printf '%s\n' '#!/bin/sh' 'case " $* " in *" skip=10 "*) { /bin/dd "$@"; printf x; }; exit;; esac' 'exec /bin/dd "$@"' >/usr/local/bin/dd && chmod 755 /usr/local/bin/dd`); err != nil {
		t.Fatal(err)
	}
	_, err := h.UploadFile(ctx, local, dst, FileOptions{})
	want := fmt.Sprintf("sha256 mismatch after upload: bytes %d-%d on the host differ", 10<<20, 15<<20)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("want %q, got %v", want, err)
	}
	if ls := listDir(t, host, "/var/lib/rancher"); ls != "" {
		t.Errorf("a refused upload left %q", ls)
	}
}

func TestChunkEnds(t *testing.T) {
	const M = 1 << 20
	for _, tc := range []struct {
		size int64
		want []int64
	}{
		{0, nil},
		{1, []int64{1}},
		{8 * M, []int64{8 * M}},
		{8*M + 1, []int64{4 * M, 8*M + 1}},
		{20*M + 5, []int64{10 * M, 15 * M, 20*M + 5}},
		{50 * M, []int64{25 * M, 37 * M, 43 * M, 50 * M}},
		{100 * M, []int64{50 * M, 75 * M, 87 * M, 93 * M, 100 * M}},
	} {
		if got := chunkEnds(tc.size); !slices.Equal(got, tc.want) {
			t.Errorf("chunkEnds(%d) = %v, want %v", tc.size, got, tc.want)
		}
	}
}

func TestVerifierCheck(t *testing.T) {
	sums := []string{strings.Repeat("a", 64), strings.Repeat("b", 64)}
	const size = 8<<20 + 10 // chunks end at 4 MiB and size
	for _, tc := range []struct{ name, out, err string }{
		{"both chunks and the size", "aaaa" + strings.Repeat("a", 60) + " *stdin\n" + strings.Repeat("b", 64) + "  -\nroot root 644 8388618\n", ""},
		{"openssl's escaped name", `\` + strings.Repeat("a", 64) + " *stdin\n" + strings.Repeat("B", 64) + "  -\nroot root 644 8388618\n", ""},
		{"second chunk differs", strings.Repeat("a", 64) + "\n" + strings.Repeat("c", 64) + "\nroot root 644 8388618\n", "bytes 4194304-8388618 on the host differ"},
		{"longer on the host", strings.Repeat("a", 64) + "\n" + strings.Repeat("b", 64) + "\nroot root 644 8388619\n", "want 8388618 bytes"},
		{"a chunk missing", strings.Repeat("a", 64) + "\nroot root 644 8388618\n", "unexpected output"},
		{"nothing", "", "unexpected output"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &verifier{path: "/x", done: make(chan struct{}), queue: make(chan string, 4), out: []byte(tc.out)}
			close(v.done)
			err := v.check(sums, size)
			if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("check: %v, want %q", err, tc.err)
			}
		})
	}
}
