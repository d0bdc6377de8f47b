package nodes

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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

func TestUploadDownload(t *testing.T) {
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	host := r.Hosts[0]
	o, _, _ := testOptions(env{})
	h := mustConnect(t, ctx, targetFor(r, host, testrack.SudoUser), o)
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
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	host := r.Hosts[0]
	o, _, _ := testOptions(env{EnvSudoPassword: r.SudoPassword})
	h := mustConnect(t, ctx, targetFor(r, host, testrack.PasswordSudoUser), o)
	secret := "K10" + strings.Repeat("deadbeef", 8) + "::server:" + r.Hosts[0].Name
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
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	host := r.Hosts[0]
	o, logs, _ := testOptions(env{})
	h := mustConnect(t, ctx, targetFor(r, host, testrack.SudoUser), o)
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
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	host := r.Hosts[0]
	o, _, _ := testOptions(env{EnvSudoPassword: r.SudoPassword})
	h := mustConnect(t, ctx, targetFor(r, host, testrack.PasswordSudoUser), o)
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
	r := testrack.New(t, 1)
	ctx := testCtx(t)
	host := r.Hosts[0]
	o, _, _ := testOptions(env{})
	h := mustConnect(t, ctx, targetFor(r, host, testrack.SudoUser), o)
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
