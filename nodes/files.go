package nodes

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/homelab/rack/internal/sleep"
)

// FileOptions describe a remote file.
type FileOptions struct {
	// Mode of the file (default 0644 for uploads, 0600 for secret files and
	// downloads).
	Mode os.FileMode
	// Owner is "user" or "user:group", applied before an uploaded file
	// appears at its path; "" leaves the writer's (root when Privileged).
	// Downloads ignore it.
	Owner string
	// Privileged writes (or reads) as root, through sudo when the target
	// uses sudo: needed for /usr/local/bin, /etc/rancher, ….
	Privileged bool
}

// Transfer reports one upload or download.
type Transfer struct {
	Path   string
	Size   int64
	SHA256 string
	// Sent is the payload bytes that crossed the wire, retries included;
	// 0 when the remote file already had this content.
	Sent int64
	// Changed is false when the destination already had this content
	// (a converged rerun).
	Changed bool
	// Attempts is how many tries the transfer took.
	Attempts int
}

// Source is local content to upload: sized, readable at any offset (so one
// Source can go to many hosts and be re-sent on a retry), and hashed at
// most once: its sha256 and the sha256 of each chunk (chunkEnds), in one pass,
// which an upload starts beside its transfer (on the other core) and needs
// only when it checks what the host stored. Safe for concurrent use.
type Source struct {
	r      io.ReaderAt
	size   int64
	closer io.Closer

	mu     sync.Mutex
	sum    string   // hex sha256, "" until known
	chunks []string // hex sha256 of each chunk (chunkEnds), nil until known
}

// OpenSource opens a local file for upload. Close it when done.
func OpenSource(path string) (*Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	return &Source{r: f, size: fi.Size(), closer: f}, nil
}

// BytesSource wraps content held in memory (it is never spooled to disk,
// which matters for secrets).
func BytesSource(b []byte) *Source {
	s := sha256.Sum256(b)
	return &Source{r: bytes.NewReader(b), size: int64(len(b)), sum: hex.EncodeToString(s[:])}
}

// ReaderSource reads size bytes from r. A reader that cannot seek is spooled
// to a private temp file first so a retry can resend it. Close it when done.
func ReaderSource(r io.Reader, size int64) (*Source, error) {
	if ra, ok := r.(io.ReaderAt); ok {
		return &Source{r: ra, size: size}, nil
	}
	f, err := os.CreateTemp("", "rack-upload-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name()) // unlinked: vanishes with the descriptor
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, size+1))
	if err == nil && n != size {
		err = fmt.Errorf("reader gave %d bytes, want %d", n, size)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Source{r: f, size: size, sum: hex.EncodeToString(h.Sum(nil)), closer: f}, nil
}

// Size is the content length.
func (s *Source) Size() int64 { return s.size }

// SHA256 is the content's hex sha256, computed on first use.
func (s *Source) SHA256() (string, error) {
	sum, _, err := s.hashes()
	return sum, err
}

// hashes returns the content's sha256 and its chunks', computing what is
// not known yet in one read. Hashing under the lock makes concurrent
// callers wait instead of hashing the same bytes again.
func (s *Source) hashes() (string, []string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sum != "" && s.chunks != nil {
		return s.sum, s.chunks, nil
	}
	var full hash.Hash
	if s.sum == "" {
		full = sha256.New()
	}
	chunks := []string{}
	buf := make([]byte, 1<<20)
	off := int64(0)
	for _, end := range chunkEnds(s.size) {
		h := sha256.New()
		w := io.Writer(h)
		if full != nil {
			w = io.MultiWriter(full, h)
		}
		if _, err := io.CopyBuffer(w, io.NewSectionReader(s.r, off, end-off), buf); err != nil {
			return "", nil, fmt.Errorf("hashing the local content: %w", err)
		}
		chunks = append(chunks, hex.EncodeToString(h.Sum(nil)))
		off = end
	}
	if full != nil {
		s.sum = hex.EncodeToString(full.Sum(nil))
	}
	s.chunks = chunks
	return s.sum, s.chunks, nil
}

// Close releases the underlying file.
func (s *Source) Close() error {
	if s.closer != nil {
		return s.closer.Close()
	}
	return nil
}

// UploadFile uploads a local file; see Upload.
func (h *Host) UploadFile(ctx context.Context, localPath, remotePath string, o FileOptions) (Transfer, error) {
	src, err := OpenSource(localPath)
	if err != nil {
		return Transfer{Path: remotePath}, fmt.Errorf("%s: upload %s: %w", h.Target.Name, remotePath, err)
	}
	defer src.Close()
	return h.Upload(ctx, src, remotePath, o)
}

// UploadReader uploads size bytes from r; see Upload.
func (h *Host) UploadReader(ctx context.Context, r io.Reader, size int64, remotePath string, o FileOptions) (Transfer, error) {
	src, err := ReaderSource(r, size)
	if err != nil {
		return Transfer{Path: remotePath}, fmt.Errorf("%s: upload %s: %w", h.Target.Name, remotePath, err)
	}
	defer src.Close()
	return h.Upload(ctx, src, remotePath, o)
}

// WriteSecretFile writes content to a 0600 file (or a stricter o.Mode). The
// content travels only inside the SFTP stream: never on a command line, in
// a log line, or in a local temp file.
func (h *Host) WriteSecretFile(ctx context.Context, remotePath string, content []byte, o FileOptions) error {
	if o.Mode == 0 || o.Mode&0o077 != 0 {
		o.Mode = 0o600
	}
	_, err := h.Upload(ctx, BytesSource(content), remotePath, o)
	return err
}

// Upload makes remotePath hold src's content, atomically:
//   - nothing is sent when the file already has that sha256 (mode and owner
//     are still corrected);
//   - otherwise the content goes to a temp file beside the destination
//     (created with the final mode before any byte is written), the host
//     hashes it chunk by chunk as it arrives and rack compares every chunk
//     and the size with what it sent, owner applied, and it is renamed over the
//     destination, so readers only ever see the old or the new file;
//   - the temp file is removed on any failure or cancellation;
//   - a dropped connection (sshd restarted, host rebooting) reconnects and
//     retries the whole upload.
func (h *Host) Upload(ctx context.Context, src *Source, remotePath string, o FileOptions) (Transfer, error) {
	if o.Mode == 0 {
		o.Mode = 0o644
	}
	tr := Transfer{Path: remotePath, Size: src.size}
	if !path.IsAbs(remotePath) || strings.ContainsAny(remotePath, "\n\x00") {
		return tr, fmt.Errorf("%s: upload %q: the remote path must be absolute, without newlines", h.Target.Name, remotePath)
	}
	var leftover string // temp file of a failed attempt, removed on the next connection
	if err := h.retry(ctx, "upload", remotePath, &tr, func() (int, error) {
		return h.uploadOnce(ctx, src, remotePath, o, &tr, &leftover)
	}); err != nil {
		return tr, err
	}
	tr.SHA256, _ = src.SHA256()
	return tr, nil
}

// retry runs one attempt of a transfer until one succeeds: after a
// transient failure (a dropped link) it waits, reconnects and tries again,
// h.opts.Attempts times in all. once returns the connection generation it
// used, so that a reconnect replaces only that connection.
func (h *Host) retry(ctx context.Context, op, remotePath string, tr *Transfer, once func() (gen int, err error)) error {
	for {
		tr.Attempts++
		gen, err := once()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !IsTransient(err) || tr.Attempts >= h.opts.Attempts {
			return h.transferError(op, remotePath, tr.Attempts, err)
		}
		h.log.Warn(op+" interrupted, reconnecting", "path", remotePath, "attempt", tr.Attempts, "err", err)
		if err := sleep.For(ctx, backoff(tr.Attempts, h.opts.BackoffBase/4, h.opts.BackoffMax)); err != nil {
			return h.transferError(op, remotePath, tr.Attempts, err)
		}
		if err := h.reconnect(ctx, gen); err != nil {
			return h.transferError(op, remotePath, tr.Attempts, err)
		}
	}
}

func (h *Host) transferError(op, p string, attempts int, err error) error {
	var hk *HostKeyError
	var ae *AuthError
	var ce *ConnectError
	var se *SudoError
	if errors.As(err, &hk) || errors.As(err, &ae) || errors.As(err, &se) {
		return err
	}
	if errors.As(err, &ce) {
		// It already names the node and what failed.
		return fmt.Errorf("%w (while trying to %s %s)", err, op, p)
	}
	msg := fmt.Sprintf("%s: %s %s", h.Target.Name, op, p)
	if attempts > 1 {
		msg += fmt.Sprintf(" (%d attempts)", attempts)
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// uploadOnce is one attempt. It returns the connection generation it used,
// so the caller replaces exactly that connection on a transient failure.
func (h *Host) uploadOnce(ctx context.Context, src *Source, dst string, o FileOptions, tr *Transfer, leftover *string) (int, error) {
	began := time.Now()
	c, gen, err := h.sftpClient(ctx, o.Privileged)
	if err != nil {
		return gen, err
	}
	if *leftover != "" {
		c.Remove(*leftover)
		*leftover = ""
	}
	// Converged? Only hash when the size already matches.
	if fi, err := c.Stat(dst); err == nil && fi.Mode().IsRegular() && fi.Size() == src.size {
		st, err := h.remoteStat(ctx, dst, o.Privileged)
		if err != nil {
			return gen, err
		}
		sum, err := src.SHA256()
		if err != nil {
			return gen, err
		}
		if st.sum == sum {
			tr.Changed = false
			return gen, h.fixAttrs(ctx, c, dst, st, o)
		}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return gen, fmt.Errorf("stat: %w", err)
	}

	dir, base := path.Split(dst)
	if err := c.MkdirAll(dir); err != nil {
		return gen, fmt.Errorf("creating %s: %w", dir, err)
	}
	tmp := path.Join(dir, "."+base+".rack-tmp-"+randomSuffix())
	f, err := c.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return gen, fmt.Errorf("creating %s: %w", tmp, err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			if c.Remove(tmp) != nil {
				*leftover = tmp // the connection is gone: clean up on the next one
			}
		}
	}()
	// Mode first, so a secret is never readable by others, not even empty.
	if err := f.Chmod(o.Mode.Perm()); err != nil {
		return gen, fmt.Errorf("chmod %s: %w", tmp, err)
	}
	// Hashed beside the transfer; needed only for the check at the end.
	go src.hashes()
	v := h.startVerifier(ctx, o.Privileged, tmp)
	verified := false
	defer func() {
		if !verified {
			v.abort()
		}
	}()
	opened := time.Now()
	// In chunks: once a chunk's writes are acknowledged the host hashes it
	// while the next one travels, so the check costs the last chunk's
	// hashing after the last byte instead of the whole file's (16 nodes
	// verifying 50 MiB each at once took 0.45 s on two cores).
	var n int64
	for _, end := range chunkEnds(src.size) {
		r := &countingReader{ctx: ctx, r: io.NewSectionReader(src.r, n, end-n), n: &h.sent, local: &tr.Sent}
		var m int64
		m, err = f.ReadFrom(r)
		n += m
		if err != nil || n != end {
			break
		}
		v.written(end)
	}
	sent := time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return gen, ctx.Err()
		}
		return gen, fmt.Errorf("writing %s: %w", tmp, err)
	}
	if n != src.size {
		return gen, fmt.Errorf("writing %s: sent %d of %d bytes", tmp, n, src.size)
	}
	// On the disk before the rename makes it the file: otherwise a power cut
	// can leave the new name pointing at nothing (fsync@openssh.com).
	if err := f.Sync(); err != nil {
		if !errors.Is(err, sftp.ErrSSHFxOpUnsupported) {
			return gen, fmt.Errorf("fsync %s: %w", tmp, err)
		}
		if err := h.Run(ctx, Sh(`sync`), RunOptions{Privileged: o.Privileged, Quiet: true}); err != nil {
			return gen, fmt.Errorf("sync after writing %s: %w", tmp, err)
		}
	}
	if err := f.Close(); err != nil {
		return gen, fmt.Errorf("closing %s: %w", tmp, err)
	}
	verified = true
	_, sums, err := src.hashes()
	if err != nil {
		return gen, err
	}
	if err := v.check(sums, src.size); err != nil {
		return gen, err
	}
	if o.Owner != "" {
		if err := h.Run(ctx, chownCmd(o.Owner, tmp), RunOptions{Privileged: o.Privileged, Quiet: true}); err != nil {
			return gen, fmt.Errorf("chown %s: %w", o.Owner, err)
		}
	}
	if ctx.Err() != nil {
		return gen, ctx.Err()
	}
	if err := c.PosixRename(tmp, dst); err != nil {
		return gen, fmt.Errorf("renaming over %s: %w", dst, err)
	}
	if err := h.Run(ctx, syncDirCmd(dir), RunOptions{Privileged: o.Privileged, Quiet: true}); err != nil {
		return gen, fmt.Errorf("syncing %s after the rename: %w", dir, err)
	}
	h.log.Debug("uploaded", "path", dst, "bytes", n, "prepare", opened.Sub(began), "transfer", sent.Sub(opened), "verify", time.Since(sent))
	ok = true
	tr.Changed = true
	return gen, nil
}

// remoteFile is what sha256sum and stat say about a remote file.
type remoteFile struct {
	sum, owner, group string
	mode              os.FileMode
}

// chownCmd sets a file's owner ("user" or "user:group").
func chownCmd(owner, path string) Cmd { return Sh(`chown -- "$1" "$2"`, owner, path) }

// statCmd hashes a file and reads its owner and mode.
func statCmd(path string) Cmd { return Sh(`f=$1; `+statScript, path) }

// syncDirCmd makes a rename in dir durable: an SD card or a vfat boot
// partition loses an unsynced directory entry on power loss. sync with an
// argument fsyncs just that (coreutils); busybox and old coreutils sync all.
func syncDirCmd(dir string) Cmd {
	return Sh(`[ -d "$1" ] || exit 0; sync -- "$1" 2>/dev/null || sync`, dir)
}

// statScript hashes "$f" and reads its owner and mode in one round trip.
// OpenSSL's sha256 uses the CPU's SHA instructions and is several times
// faster than coreutils' on large files; systems without it fall back.
const statScript = `if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r "$f"; else sha256sum -- "$f"; fi && stat -c '%U %G %a' -- "$f"`

// remoteStat hashes a remote file and reads its owner and mode.
func (h *Host) remoteStat(ctx context.Context, p string, privileged bool) (remoteFile, error) {
	out, err := h.Output(ctx, statCmd(p), RunOptions{Privileged: privileged, Quiet: true})
	if err != nil {
		return remoteFile{}, fmt.Errorf("sha256 of %s: %w", p, err)
	}
	return parseRemoteStat(string(out))
}

// chunkEnds splits an upload of size bytes into the chunks the host hashes
// while the rest travels, and returns each chunk's end: half of what is left
// each time, in whole MiB (chunkScript's dd block), until at most
// 2*lastChunk is left for one last chunk. The host's hashing of each chunk
// thus has the transfer of the next (half as long) to finish in, and what
// is left to hash after the last byte is small; a chunk costs the host two
// process starts, so there are few (5 for 100 MiB).
func chunkEnds(size int64) []int64 {
	const mib, lastChunk = 1 << 20, 4 << 20
	var ends []int64
	off := int64(0)
	for size-off > 2*lastChunk {
		off += (size - off) / 2 / mib * mib
		ends = append(ends, off)
	}
	if size > off {
		ends = append(ends, size)
	}
	return ends
}

// chunkScript hashes the file "$f" chunk by chunk while it is written: each
// line on stdin is the end offset of bytes already written, and it prints
// the sha256 of the bytes since the previous one; a line "." ends the file,
// and it prints owner, group, mode and size. EOF without "." (an aborted
// upload) exits without a word. dd's skip seeks (GNU and busybox alike).
const chunkScript = `IFS= read -r f || exit 3
if command -v openssl >/dev/null 2>&1; then H() { openssl dgst -sha256 -r; }; else H() { sha256sum; }; fi
o=0
while IFS= read -r e; do
  if [ "$e" = . ]; then exec stat -c '%U %G %a %s' -- "$f"; fi
  dd if="$f" bs=1048576 skip=$((o / 1048576)) count=$(((e - o + 1048575) / 1048576)) 2>/dev/null | H || exit 1
  o=$e
done
exit 3`

// verifier is a remote chunkScript started before a transfer, so opening
// its session (and sudo) does not add to the upload's time, and hashing
// overlaps it.
type verifier struct {
	pw    *io.PipeWriter
	queue chan string
	path  string
	done  chan struct{}
	out   []byte
	err   error
}

func (h *Host) startVerifier(ctx context.Context, privileged bool, p string) *verifier {
	pr, pw := io.Pipe()
	v := &verifier{pw: pw, path: p, done: make(chan struct{}), queue: make(chan string, 1024)}
	go func() {
		defer close(v.done)
		v.out, v.err = h.Output(ctx, Sh(chunkScript), RunOptions{Privileged: privileged, Quiet: true, Stdin: pr})
		pr.Close()
	}()
	// A pipe write waits for the reader: lines go from a queue in the
	// background, so a slow session start never holds the transfer up.
	go func() {
		for l := range v.queue {
			if _, err := io.WriteString(v.pw, l+"\n"); err != nil {
				for range v.queue { // the session ended: drop the rest
				}
				return
			}
		}
		v.pw.Close()
	}()
	v.send(p)
	return v
}

// send queues a line for the remote script, in order.
func (v *verifier) send(line string) { v.queue <- line }

// written tells the host the file holds every byte before end.
func (v *verifier) written(end int64) { v.send(strconv.FormatInt(end, 10)) }

// check ends the file and compares the host's chunk hashes and size with
// what was sent.
func (v *verifier) check(sums []string, size int64) error {
	v.send(".")
	close(v.queue)
	<-v.done
	if v.err != nil {
		return fmt.Errorf("sha256 of %s: %w", v.path, v.err)
	}
	lines := strings.Split(strings.TrimSpace(string(v.out)), "\n")
	if len(lines) != len(sums)+1 {
		return fmt.Errorf("sha256 of %s: unexpected output %q", v.path, abbreviate(string(v.out), 200))
	}
	ends := chunkEnds(size)
	for i, want := range sums {
		got := strings.Fields(lines[i])
		if len(got) == 0 || hexSum(got[0]) != want {
			start := int64(0)
			if i > 0 {
				start = ends[i-1]
			}
			return fmt.Errorf("sha256 mismatch after upload: bytes %d-%d on the host differ from what was sent (disk full or failing?)", start, ends[i])
		}
	}
	st := strings.Fields(lines[len(sums)])
	if len(st) != 4 || st[3] != strconv.FormatInt(size, 10) {
		return fmt.Errorf("%s on the host: stat says %q, want %d bytes (disk full or failing?)", v.path, lines[len(sums)], size)
	}
	return nil
}

// abort ends an unused verifier: the remote read sees EOF and exits.
func (v *verifier) abort() {
	close(v.queue)
	<-v.done
}

// hexSum is a hash as sha256sum or openssl prints it (openssl escapes
// names with a leading backslash), lower-cased.
func hexSum(field string) string { return strings.ToLower(strings.TrimPrefix(field, `\`)) }

func parseRemoteStat(out string) (remoteFile, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		return remoteFile{}, fmt.Errorf("unexpected sha256sum/stat output %q", abbreviate(out, 200))
	}
	sum := strings.Fields(lines[0])
	st := strings.Fields(lines[1])
	if len(sum) == 0 || len(sum[0]) != 64 || len(st) != 3 {
		return remoteFile{}, fmt.Errorf("unexpected sha256sum/stat output %q", abbreviate(out, 200))
	}
	mode, err := strconv.ParseUint(st[2], 8, 32)
	if err != nil {
		return remoteFile{}, fmt.Errorf("unexpected stat mode %q", st[2])
	}
	return remoteFile{sum: hexSum(sum[0]), owner: st[0], group: st[1], mode: os.FileMode(mode)}, nil
}

// fixAttrs corrects mode and owner on an unchanged file.
func (h *Host) fixAttrs(ctx context.Context, c *sftp.Client, p string, st remoteFile, o FileOptions) error {
	if st.mode.Perm() != o.Mode.Perm() {
		if err := c.Chmod(p, o.Mode.Perm()); err != nil {
			return fmt.Errorf("chmod %s: %w", p, err)
		}
	}
	if o.Owner != "" {
		user, group, hasGroup := strings.Cut(o.Owner, ":")
		if st.owner != user || (hasGroup && st.group != group) {
			if err := h.Run(ctx, chownCmd(o.Owner, p), RunOptions{Privileged: o.Privileged, Quiet: true}); err != nil {
				return fmt.Errorf("chown %s: %w", o.Owner, err)
			}
		}
	}
	return nil
}

// Download copies remotePath to localPath, verifying its sha256 against the
// host's, and writes it atomically (temp file, fsync, rename). The default
// local mode is 0600: what rack downloads (kubeconfigs, etcd snapshots) is
// sensitive.
func (h *Host) Download(ctx context.Context, remotePath, localPath string, o FileOptions) (Transfer, error) {
	if o.Mode == 0 {
		o.Mode = 0o600
	}
	tr := Transfer{Path: localPath}
	err := h.retry(ctx, "download", remotePath, &tr, func() (int, error) {
		return h.downloadOnce(ctx, remotePath, localPath, o, &tr)
	})
	return tr, err
}

func (h *Host) downloadOnce(ctx context.Context, remotePath, localPath string, o FileOptions, tr *Transfer) (int, error) {
	c, gen, err := h.sftpClient(ctx, o.Privileged)
	if err != nil {
		return gen, err
	}
	rf, err := c.Open(remotePath)
	if err != nil {
		return gen, fmt.Errorf("open: %w", err)
	}
	defer rf.Close()
	dir, base := filepath.Split(localPath)
	if dir == "" {
		dir = "."
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return gen, err
	}
	lf, err := os.CreateTemp(dir, "."+base+".rack-tmp-*")
	if err != nil {
		return gen, err
	}
	ok := false
	defer func() {
		if !ok {
			lf.Close()
			os.Remove(lf.Name())
		}
	}()
	if err := lf.Chmod(o.Mode.Perm()); err != nil {
		return gen, err
	}
	hash := sha256.New()
	w := &ctxWriter{ctx: ctx, w: io.MultiWriter(lf, hash)}
	n, err := rf.WriteTo(w)
	if err != nil {
		if ctx.Err() != nil {
			return gen, ctx.Err()
		}
		return gen, fmt.Errorf("reading: %w", err)
	}
	st, err := h.remoteStat(ctx, remotePath, o.Privileged)
	if err != nil {
		return gen, err
	}
	got := hex.EncodeToString(hash.Sum(nil))
	if st.sum != got {
		return gen, fmt.Errorf("sha256 mismatch: host has %s, received %s (file changing while read?)", st.sum, got)
	}
	if err := lf.Sync(); err != nil {
		return gen, err
	}
	if err := lf.Close(); err != nil {
		return gen, err
	}
	if err := os.Rename(lf.Name(), localPath); err != nil {
		return gen, err
	}
	ok = true
	tr.Size, tr.SHA256, tr.Changed = n, got, true
	return gen, nil
}

// countingReader counts payload bytes into the host and transfer totals and
// stops the transfer when ctx is cancelled. Size keeps pkg/sftp's concurrent
// write path enabled.
type countingReader struct {
	ctx   context.Context
	r     *io.SectionReader
	n     *atomic.Int64
	local *int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p)
	r.n.Add(int64(n))
	*r.local += int64(n)
	return n, err
}

func (r *countingReader) Size() int64 { return r.r.Size() }

type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (w *ctxWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	return w.w.Write(p)
}

func randomSuffix() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// sftpSession is an SFTP client, either on the sftp subsystem or on an
// sftp-server run under sudo.
type sftpSession struct {
	client *sftp.Client
	sess   *ssh.Session
}

func (s *sftpSession) close() {
	s.client.Close()
	if s.sess != nil {
		s.sess.Close()
	}
}

// sftpServerCmd starts the first sftp-server found in its arguments.
func sftpServerCmd() Cmd {
	return Sh(`for p in "$@"; do if [ -x "$p" ]; then exec "$p"; fi; done
echo "rack: no sftp-server found (tried $*)" >&2; exit 127`, sftpServers...)
}

// sftpServers are where distributions put OpenSSH's sftp-server.
var sftpServers = []string{
	"/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
	"/usr/lib/ssh/sftp-server", "/usr/libexec/sftp-server",
}

// sftpClient returns the cached SFTP client for this connection.
func (h *Host) sftpClient(ctx context.Context, privileged bool) (*sftp.Client, int, error) {
	privileged = privileged && h.Target.UseSudo()
	conn, gen, err := h.current(ctx)
	if err != nil {
		return nil, gen, err
	}
	h.mu.Lock()
	if s := h.sftp[privileged]; s != nil && gen == h.gen {
		h.mu.Unlock()
		return s.client, gen, nil
	}
	h.mu.Unlock()

	packet, check := h.sftpPacket()
	s, err := h.newSFTP(ctx, conn, privileged, packet)
	if err == nil && check {
		if _, ok := s.client.HasExtension("limits@openssh.com"); !ok {
			// Not an OpenSSH 8.7+ sftp-server: large packets may be refused.
			s.close()
			s, err = h.newSFTP(ctx, conn, privileged, sftpSafePacket)
		}
	}
	if err != nil {
		return nil, gen, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if gen != h.gen {
		s.close()
		return nil, gen, fmt.Errorf("%s: connection replaced while starting sftp: %w", h.Target.Name, net.ErrClosed)
	}
	if old := h.sftp[privileged]; old != nil {
		s.close() // another goroutine won the race
		return old.client, gen, nil
	}
	h.sftp[privileged] = s
	return s.client, gen, nil
}

func (h *Host) newSFTP(ctx context.Context, conn *connection, privileged bool, packet int) (*sftpSession, error) {
	if privileged {
		return h.sudoSFTP(ctx, conn, packet)
	}
	c, err := sftp.NewClient(conn.client, h.sftpOptions(packet)...)
	if err != nil {
		return nil, fmt.Errorf("%s: starting sftp: %w", h.Target.Name, err)
	}
	return &sftpSession{client: c}, nil
}

// sudoSFTP runs sftp-server under sudo over a session's stdin/stdout. For a
// password sudo, the password line goes first on the same stdin.
func (h *Host) sudoSFTP(ctx context.Context, conn *connection, packet int) (*sftpSession, error) {
	prefix, secret, err := h.sudoFor(ctx, true)
	if err != nil {
		return nil, err
	}
	sess, err := conn.client.NewSession()
	if err != nil {
		return nil, fmt.Errorf("%s: opening a session for sftp: %w", h.Target.Name, err)
	}
	stdin, err := sess.StdinPipe()
	if err != nil {
		sess.Close()
		return nil, err
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		sess.Close()
		return nil, err
	}
	stderr := &tailBuffer{max: 2048}
	sess.Stderr = stderr
	line, err := sftpServerCmd().Line()
	if err != nil {
		sess.Close()
		return nil, err
	}
	if err := sess.Start(prefix + line); err != nil {
		sess.Close()
		return nil, err
	}
	if len(secret) > 0 {
		if _, err := stdin.Write(secret); err != nil {
			sess.Close()
			return nil, err
		}
	}
	// NewClientPipe waits for the server's version packet; a sudo that
	// hangs or fails must not block us forever.
	type result struct {
		c   *sftp.Client
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := sftp.NewClientPipe(stdout, stdin, h.sftpOptions(packet)...)
		ch <- result{c, err}
	}()
	timer := time.NewTimer(h.opts.ConnectTimeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		if r.err == nil {
			return &sftpSession{client: r.c, sess: sess}, nil
		}
		sess.Close()
		return nil, fmt.Errorf("%s: starting sftp-server under sudo: %w (%s)", h.Target.Name, r.err, strings.TrimSpace(stderr.String()))
	case <-ctx.Done():
		sess.Close()
		return nil, ctx.Err()
	case <-timer.C:
		sess.Close()
		return nil, fmt.Errorf("%s: starting sftp-server under sudo timed out (%s)", h.Target.Name, strings.TrimSpace(stderr.String()))
	}
}
