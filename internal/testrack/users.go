package testrack

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The users every host accepts logins for, with the client keys of the rack.
const (
	// RootUser logs in with a key (PermitRootLogin prohibit-password).
	RootUser = "root"
	// SudoUser may run anything through sudo without a password.
	SudoUser = "rackuser"
	// PasswordSudoUser may use sudo only with Rack.SudoPassword.
	PasswordSudoUser = "racksudo"
)

// Users lists the login users of every host.
var Users = []string{RootUser, SudoUser, PasswordSudoUser}

const sudoersPath = "/etc/sudoers.d/rack-testrack"

const sudoersContent = `# Written by github.com/homelab/rack/internal/testrack for its test hosts.
# Neither user has a usable password on this machine itself: only the test
# hosts' private /etc/shadow gives racksudo one.
rackuser ALL=(ALL:ALL) NOPASSWD: ALL
racksudo ALL=(ALL:ALL) ALL
`

// ensureUsers creates the test users and the sudoers drop-in on the real
// machine if they are missing. Must hold the machine lock, which makes it
// safe against concurrent test processes.
func ensureUsers(ctx context.Context) error {
	for _, u := range []string{SudoUser, PasswordSudoUser} {
		if _, err := user.Lookup(u); err == nil {
			continue
		}
		if err := run(ctx, "useradd", "--create-home", "--shell", "/bin/bash",
			"--comment", "rack test host user", u); err != nil {
			return err
		}
	}
	if b, err := os.ReadFile(sudoersPath); err == nil && string(b) == sudoersContent {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(sudoersPath), ".rack-testrack.*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(sudoersContent); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o440); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// A broken drop-in would lock root out of sudo on this machine: validate
	// before it can take effect. The temp name has a dot, which sudo ignores.
	if err := run(ctx, "visudo", "-cf", tmp.Name()); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), sudoersPath)
}

// hostShadow returns the /etc/shadow every host of a rack sees (bind-mounted
// over the real one): the machine's file, with the test users unlocked and
// racksudo's password set to the rack's own.
//
// Doing it per rack instead of chpasswd on the machine has two reasons:
// concurrent test processes each generate their own password for the same
// machine user and would overwrite each other's, and a sudo-capable account
// with a password lying around in test files should not exist on the
// developer's machine itself.
//
// The users also need an entry that is not locked: with UsePAM no, sshd
// refuses even key logins for accounts whose hash starts with "!", which is
// what useradd leaves (and Debian may have for root).
func hostShadow(ctx context.Context, sudoPassword string) ([]byte, error) {
	real, err := os.ReadFile("/etc/shadow")
	if err != nil {
		return nil, err
	}
	hash, err := cryptSHA512(ctx, sudoPassword)
	if err != nil {
		return nil, err
	}
	today := strconv.FormatInt(time.Now().Unix()/86400, 10)
	want := map[string]string{RootUser: "*", SudoUser: "*", PasswordSudoUser: hash}
	var out bytes.Buffer
	for _, line := range strings.Split(strings.TrimRight(string(real), "\n"), "\n") {
		name, _, _ := strings.Cut(line, ":")
		if h, ok := want[name]; ok {
			// A lastchg of 0 would force a password change at login, and an
			// expiry would lock the account: write the whole entry.
			line = strings.Join([]string{name, h, today, "0", "99999", "7", "", "", ""}, ":")
			delete(want, name)
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	if len(want) > 0 {
		return nil, fmt.Errorf("users missing from /etc/shadow: %v", want)
	}
	return out.Bytes(), nil
}

// cryptSHA512 hashes a password the way chpasswd would (SHA-512 crypt),
// through the system's libcrypt via perl (Essential in Debian, so always
// there). The password travels on stdin, never in argv.
func cryptSHA512(ctx context.Context, password string) (string, error) {
	salt := randomString(16)
	out, err := runOut(ctx, []byte(password+"\n"), "perl", "-e",
		`chomp(my $p = <STDIN>); my $h = crypt($p, $ARGV[0]); `+
			`defined $h && $h =~ /^\$6\$/ or die "crypt failed\n"; print $h`,
		"$6$"+salt+"$")
	if err != nil {
		return "", err
	}
	return string(out), nil
}

// randomString returns n (at most 26) random base32 characters: letters and
// digits need no quoting anywhere (shell, YAML, sudo -S), so tests can pass
// secrets around without escaping bugs.
func randomString(n int) string {
	return rand.Text()[:n]
}
