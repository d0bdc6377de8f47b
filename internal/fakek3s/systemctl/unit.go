package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// unit is what the shim understands of a service unit file.
type unit struct {
	name         string // with suffix: k3s.service
	path         string
	description  string
	typ          string // simple, exec, notify, oneshot
	notifyAccess string // main (systemd's default for Type=notify), all, none
	execStart    []command
	execPre      []command
	env          []string // Environment=, in order
	envFiles     []envFile
	workDir      string
	restart      string
	restartDelay time.Duration
	startTO      time.Duration // 0: none
	stopTO       time.Duration
	killMode     string
	remain       bool // RemainAfterExit
	wantedBy     []string
	requiredBy   []string
	hasInstall   bool
}

// command is one Exec line: argv as written (expanded at start time) and
// its prefixes.
type command struct {
	raw          string
	ignoreFail   bool // "-"
	argv0        bool // "@": the second word is argv[0]
	noExpansions bool // ":"
}

type envFile struct {
	path     string
	optional bool
}

// normalize adds ".service" to a bare unit name, as systemctl does.
func normalize(name string) string {
	switch filepath.Ext(name) {
	case ".service", ".target", ".socket", ".timer", ".mount", ".path", ".slice", ".scope":
		return name
	}
	return name + ".service"
}

// errNoUnit means the unit file does not exist.
var errNoUnit = errors.New("unit not found")

// loadUnit reads /etc/systemd/system/<name>.
func loadUnit(name string) (*unit, error) {
	path := filepath.Join(unitDir, name)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNoUnit
	}
	if err != nil {
		return nil, err
	}
	u := &unit{
		name: name, path: path, typ: "simple", restart: "no", notifyAccess: "main",
		restartDelay: 100 * time.Millisecond, startTO: 90 * time.Second,
		stopTO: maxStopTimeout, killMode: "control-group",
	}
	section := ""
	// A backslash at the end of a line continues it on the next, with the
	// line break becoming a space.
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' && line[len(line)-1] == ']' {
			section = line[1 : len(line)-1]
			if section == "Install" {
				u.hasInstall = true
			}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: expected Key=Value", path, n+1)
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		value = u.specifiers(value)
		if err := u.set(section, key, value); err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %w", path, n+1, key, err)
		}
	}
	if len(u.execStart) == 0 {
		return nil, fmt.Errorf("%s: Service has no ExecStart= setting", path)
	}
	return u, nil
}

func (u *unit) set(section, key, value string) error {
	var err error
	switch section + "." + key {
	case "Unit.Description":
		u.description = value
	case "Service.Type":
		switch value {
		case "simple", "exec", "notify", "notify-reload", "oneshot":
			u.typ = strings.TrimSuffix(value, "-reload")
		default:
			return fmt.Errorf("unsupported type %q", value)
		}
	case "Service.ExecStart":
		if value == "" {
			u.execStart = nil // an empty assignment resets the list
		} else {
			u.execStart = append(u.execStart, parseCommand(value))
		}
	case "Service.ExecStartPre":
		if value == "" {
			u.execPre = nil
		} else {
			u.execPre = append(u.execPre, parseCommand(value))
		}
	case "Service.Environment":
		if value == "" {
			u.env = nil
			break
		}
		words, err := splitWords(value)
		if err != nil {
			return err
		}
		for _, w := range words {
			if strings.Contains(w.text, "=") {
				u.env = append(u.env, w.text)
			}
		}
	case "Service.EnvironmentFile":
		if value == "" {
			u.envFiles = nil
			break
		}
		opt := strings.HasPrefix(value, "-")
		u.envFiles = append(u.envFiles, envFile{strings.TrimPrefix(value, "-"), opt})
	case "Service.WorkingDirectory":
		u.workDir = strings.TrimPrefix(value, "-")
	case "Service.NotifyAccess":
		// exec also admits ExecStartPre= processes, which never notify
		// in the units here: treated as main.
		switch value {
		case "main", "exec":
			u.notifyAccess = "main"
		case "all", "none":
			u.notifyAccess = value
		default:
			err = fmt.Errorf("invalid NotifyAccess=%s", value)
		}
	case "Service.Restart":
		u.restart = value
	case "Service.RestartSec":
		u.restartDelay, err = parseTimespan(value)
	case "Service.TimeoutStartSec":
		u.startTO, err = parseTimespan(value)
	case "Service.TimeoutStopSec":
		u.stopTO, err = parseTimespan(value)
		if u.stopTO == 0 || u.stopTO > maxStopTimeout {
			u.stopTO = maxStopTimeout
		}
	case "Service.TimeoutSec":
		u.startTO, err = parseTimespan(value)
		u.stopTO = min(u.startTO, maxStopTimeout)
	case "Service.KillMode":
		u.killMode = value
	case "Service.RemainAfterExit":
		u.remain = value == "yes" || value == "true" || value == "1" || value == "on"
	case "Install.WantedBy":
		u.wantedBy = append(u.wantedBy, strings.Fields(value)...)
	case "Install.RequiredBy":
		u.requiredBy = append(u.requiredBy, strings.Fields(value)...)
	}
	// Everything else (After=, Wants=, LimitNOFILE=, Delegate=…) has no
	// meaning without systemd and is accepted silently, like systemd
	// itself does with settings it does not act on.
	return err
}

// specifiers expands the unit specifiers the k3s unit uses (%N in
// EnvironmentFile=-/etc/default/%N) and the other common ones.
func (u *unit) specifiers(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	prefix := strings.TrimSuffix(u.name, filepath.Ext(u.name))
	instance := ""
	if p, i, ok := strings.Cut(prefix, "@"); ok {
		prefix, instance = p, i
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 'n':
			b.WriteString(u.name)
		case 'N':
			b.WriteString(strings.TrimSuffix(u.name, filepath.Ext(u.name)))
		case 'p':
			b.WriteString(prefix)
		case 'i', 'I':
			b.WriteString(instance)
		case 't':
			b.WriteString("/run")
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func parseCommand(v string) command {
	c := command{}
	for len(v) > 0 && strings.ContainsRune("-@:+!", rune(v[0])) {
		switch v[0] {
		case '-':
			c.ignoreFail = true
		case '@':
			c.argv0 = true
		case ':':
			c.noExpansions = true
		}
		v = v[1:]
	}
	c.raw = v
	return c
}

// argv expands the command line against env (systemd's rules: "$VAR" as
// a word of its own splits at whitespace, "${VAR}" is one word).
func (c command) argv(env map[string]string) (path string, argv []string, err error) {
	words, err := splitWords(c.raw)
	if err != nil {
		return "", nil, err
	}
	for _, w := range words {
		if c.noExpansions {
			argv = append(argv, w.text)
			continue
		}
		if w.bareVar != "" {
			argv = append(argv, strings.Fields(env[w.bareVar])...)
			continue
		}
		argv = append(argv, expand(w.text, env))
	}
	if len(argv) == 0 {
		return "", nil, errors.New("empty command line")
	}
	path = argv[0]
	if c.argv0 {
		if len(argv) < 2 {
			return "", nil, errors.New("@ needs a path and an argv[0]")
		}
		argv = argv[1:]
	}
	return path, argv, nil
}

func expand(s string, env map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '$' && i+1 < len(s) && s[i+1] == '$' {
			b.WriteByte('$')
			i++
			continue
		}
		if s[i] == '$' && i+1 < len(s) && s[i+1] == '{' {
			if end := strings.IndexByte(s[i:], '}'); end > 0 {
				b.WriteString(env[s[i+2:i+end]])
				i += end
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

type word struct {
	text    string
	bareVar string // set when the word was an unquoted $NAME on its own
}

// splitWords splits like systemd: whitespace separates words, double and
// single quotes group, backslash escapes.
func splitWords(s string) ([]word, error) {
	var words []word
	i := 0
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i == len(s) {
			return words, nil
		}
		var b strings.Builder
		quoted := false
		start := i
		for i < len(s) && s[i] != ' ' && s[i] != '\t' {
			switch c := s[i]; c {
			case '"', '\'':
				quoted = true
				end := i + 1
				for end < len(s) && s[end] != c {
					if s[end] == '\\' && c == '"' && end+1 < len(s) {
						b.WriteString(unescape(s[end+1]))
						end += 2
						continue
					}
					b.WriteByte(s[end])
					end++
				}
				if end == len(s) {
					return nil, fmt.Errorf("unbalanced quotes in %q", s)
				}
				i = end + 1
			case '\\':
				if i+1 < len(s) {
					b.WriteString(unescape(s[i+1]))
					i += 2
				} else {
					i++
				}
			default:
				b.WriteByte(c)
				i++
			}
		}
		w := word{text: b.String()}
		if raw := s[start:i]; !quoted && len(raw) > 1 && raw[0] == '$' && isName(raw[1:]) {
			w.bareVar = raw[1:]
		}
		words = append(words, w)
	}
}

func unescape(c byte) string {
	switch c {
	case 'n':
		return "\n"
	case 't':
		return "\t"
	case 's':
		return " "
	default:
		return string(c)
	}
}

func isName(s string) bool {
	for i, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}

// environment is the service's environment: a clean base like systemd's,
// then Environment=, then EnvironmentFile= (which wins).
func (u *unit) environment() ([]string, map[string]string, error) {
	m := map[string]string{}
	var order []string
	put := func(k, v string) {
		if _, ok := m[k]; !ok {
			order = append(order, k)
		}
		m[k] = v
	}
	put("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	put("LANG", "C.UTF-8")
	for _, kv := range u.env {
		k, v, _ := strings.Cut(kv, "=")
		put(k, v)
	}
	for _, f := range u.envFiles {
		kvs, err := readEnvFile(f.path)
		if errors.Is(err, fs.ErrNotExist) && f.optional {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("EnvironmentFile %s: %w", f.path, err)
		}
		for _, kv := range kvs {
			put(kv[0], kv[1])
		}
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+m[k])
	}
	return env, m, nil
}

// readEnvFile parses KEY=VALUE lines; quotes around values are removed.
func readEnvFile(path string) ([][2]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][2]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(strings.TrimPrefix(k, "export ")), strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		out = append(out, [2]string{k, v})
	}
	return out, sc.Err()
}

// parseTimespan reads systemd time spans: "90", "5s", "1min 30s",
// "infinity". Zero and infinity both mean no limit.
func parseTimespan(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "infinity" {
		return 0, nil
	}
	units := []struct {
		suffix string
		d      time.Duration
	}{
		{"usec", time.Microsecond}, {"us", time.Microsecond}, {"msec", time.Millisecond}, {"ms", time.Millisecond},
		{"seconds", time.Second}, {"second", time.Second}, {"sec", time.Second}, {"s", time.Second},
		{"minutes", time.Minute}, {"minute", time.Minute}, {"min", time.Minute}, {"m", time.Minute},
		{"hours", time.Hour}, {"hour", time.Hour}, {"hr", time.Hour}, {"h", time.Hour},
		{"days", 24 * time.Hour}, {"day", 24 * time.Hour}, {"d", 24 * time.Hour},
	}
	var total time.Duration
	for _, part := range strings.Fields(s) {
		num, mult := part, time.Second
		for _, u := range units {
			if strings.HasSuffix(part, u.suffix) {
				num, mult = strings.TrimSuffix(part, u.suffix), u.d
				break
			}
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || f < 0 {
			return 0, fmt.Errorf("invalid time span %q", s)
		}
		total += time.Duration(f * float64(mult))
	}
	return total, nil
}
