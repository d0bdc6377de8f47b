package nodes

import (
	"fmt"
	"strings"
)

// Cmd is a remote command: a fixed shell script and the values it works on.
// Values never become part of the script's text; they reach it as its
// positional parameters ("$1", "$@"), each quoted by Quote. A path from the
// inventory such as "/srv/a;reboot" is therefore one argument, never a second
// command. Build every remote command with Sh, and keep Script a constant.
type Cmd struct {
	// Script is POSIX sh. It reads its values as "$1" … or "$@".
	Script string
	// Args are the values, passed unchanged.
	Args []string
}

// Sh is a command running script with args as "$1" ….
func Sh(script string, args ...string) Cmd { return Cmd{Script: script, Args: args} }

// Line renders the command line an SSH session (or sudo) runs:
// sh -c WRAPPER 'SCRIPT' rack 'ARG1' 'ARG2' …, where rack is the script's $0.
// It refuses a NUL byte, which no command line can carry.
func (c Cmd) Line() (string, error) {
	var b strings.Builder
	b.WriteString("sh -c ")
	b.WriteString(Quote(wrapper))
	for i, a := range append([]string{c.Script, "rack"}, c.Args...) {
		if strings.IndexByte(a, 0) >= 0 {
			if i == 0 {
				return "", fmt.Errorf("the script holds a NUL byte")
			}
			return "", fmt.Errorf("argument %d holds a NUL byte, which no command line can carry", i-1)
		}
		b.WriteByte(' ')
		b.WriteString(Quote(a))
	}
	return b.String(), nil
}

// wrapper runs the script ("$0") with its arguments so that a cancelled
// command really ends. rack cancels with SIGTERM, which sshd (or sudo, which
// relays it) delivers to the shell only: a shell running a command in the
// foreground neither passes it on nor handles it before that command ends,
// so the command would go on without rack (measured with sudo here). The
// script runs in the background of a shell that waits for it and turns a
// TERM into a TERM for its whole process group; its stdin is the session's
// (fd 3: a background job's would be /dev/null).
const wrapper = `exec 3<&0; sh -c "$0" "$@" <&3 3<&- & trap 'trap - TERM HUP INT; kill -TERM 0' TERM HUP INT; wait $!`

// String is the script, for messages; values are left out (they may be long).
func (c Cmd) String() string { return c.Script }

// Quote quotes s as one word for POSIX sh: in single quotes, where nothing is
// special but the quote itself, which becomes '\”. It is the only quoting
// function in rack: every remote command goes through Cmd.Line, which uses it.
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
