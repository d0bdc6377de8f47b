package nodes

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Facts is what rack needs to know about a machine before touching it.
// K3sConfig may hold the cluster token: never log or print a Facts value
// whole.
type Facts struct {
	Hostname string
	// Arch is arm64, amd64 or arm; for anything else it is the raw uname -m
	// and ArchKnown is false.
	Arch      string
	Machine   string // raw `uname -m`
	ArchKnown bool
	OS        OSRelease
	// Init is "systemd", "openrc" or "" (unknown).
	Init string
	// Model is the device-tree model ("Raspberry Pi 4 Model B Rev 1.4"), if any.
	Model string
	// CmdlinePath is the kernel command line file the boot uses
	// (/boot/firmware/cmdline.txt, /boot/cmdline.txt) or "" when none.
	CmdlinePath string
	Cmdline     string
	// CgroupVersion is 2 (unified) or 1; MemoryCgroup tells whether the
	// memory controller is enabled (k3s needs it; on a Pi it takes
	// cgroup_enable=memory in cmdline.txt).
	CgroupVersion int
	MemoryCgroup  bool
	// Iptables is `iptables --version`'s first line; IptablesVersion
	// ("1.8.9") and IptablesMode ("nf_tables", "legacy") are parsed from it.
	Iptables        string
	IptablesVersion string
	IptablesMode    string
	// MemTotal is in bytes.
	MemTotal uint64
	// RancherDiskPath is /var/lib/rancher or its nearest existing parent;
	// RancherDiskFree is the space available there, in bytes.
	RancherDiskPath string
	RancherDiskFree uint64
	// K3sInstalled is whether /usr/local/bin/k3s exists.
	K3sInstalled bool
	K3sVersion   string // "v1.33.5+k3s1"
	K3sSHA256    string
	// K3sUnitPath is the installed service file (systemd or OpenRC), if any.
	K3sUnitPath string
	K3sUnit     string
	// K3sApplied is the record rack wrote after the service last came up
	// Ready with its files (AppliedPath), "" when there is none.
	K3sApplied string
	// TempFiles are temp files of uploads a killed run left behind
	// (".<name>.rack-tmp-*" beside the files rack writes).
	TempFiles []string
	// K3sConfigPresent is whether /etc/rancher/k3s/config.yaml exists.
	K3sConfigPresent bool
	K3sConfig        string
	// Warnings are things the script saw but could not make sense of.
	Warnings []string
}

// OSRelease is the part of /etc/os-release rack uses.
type OSRelease struct {
	ID         string
	VersionID  string
	PrettyName string
}

// IsPi reports whether the device tree names a Raspberry Pi.
func (f Facts) IsPi() bool { return strings.HasPrefix(f.Model, "Raspberry Pi") }

// AppliedPath is where rack records, on the node, what the running k3s
// service was started from (see nodes/k3s). It lives in k3s' data folder, so
// an uninstall removes it with everything else.
const AppliedPath = "/var/lib/rancher/k3s/rack-applied.json"

// factsDelim ends multi-line values in the facts script's output. It is a
// long fixed marker: files rack reads are not expected to contain it, and
// ParseFacts stays a pure function of the output.
const factsDelim = "__RACK_END_7f3a9c1e__"

// factsScript prints one key=value per line, and key<<DELIM … DELIM blocks
// for file contents. POSIX sh and coreutils/busybox only.
const factsScript = `export LC_ALL=C PATH="$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
D=` + factsDelim + `
kv() { printf '%s=%s\n' "$1" "$2"; }
blob() { printf '%s<<%s\n' "$1" "$D"; cat "$2" 2>/dev/null | tr -d '\000'; printf '\n%s\n' "$D"; }
kv uname_m "$(uname -m)"
kv hostname "$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)"
[ -r /etc/os-release ] && blob os_release /etc/os-release
[ -d /run/systemd/system ] && kv systemd 1
{ [ -e /sbin/openrc-run ] || [ -e /run/openrc ]; } && kv openrc 1
for f in /proc/device-tree/model /sys/firmware/devicetree/base/model; do
  if [ -r "$f" ]; then blob model "$f"; break; fi
done
c=
if [ -e /boot/firmware/cmdline.txt ]; then c=/boot/firmware/cmdline.txt; elif [ -e /boot/cmdline.txt ]; then c=/boot/cmdline.txt; fi
kv cmdline_path "$c"
[ -n "$c" ] && blob cmdline "$c"
[ -r /sys/fs/cgroup/cgroup.controllers ] && kv cgroup2_controllers "$(cat /sys/fs/cgroup/cgroup.controllers)"
if [ -r /proc/cgroups ]; then
  while read -r n h c2 e; do [ "$n" = memory ] && kv proc_cgroups_memory "$e"; done < /proc/cgroups
fi
kv iptables "$(iptables --version 2>/dev/null | head -n 1)"
while read -r k v u; do [ "$k" = MemTotal: ] && kv memtotal_kb "$v"; done < /proc/meminfo
d=/var/lib/rancher
while [ ! -e "$d" ]; do d=$(dirname "$d"); done
kv df_path "$d"
kv df "$(df -Pk "$d" 2>/dev/null | tail -n 1)"
if [ -e /usr/local/bin/k3s ]; then
  kv k3s_present 1
  kv k3s_version "$(/usr/local/bin/k3s --version </dev/null 2>/dev/null | head -n 1)"
  set -- $(sha256sum /usr/local/bin/k3s 2>/dev/null)
  kv k3s_sha256 "$1"
fi
for u in /etc/systemd/system/k3s.service /etc/systemd/system/k3s-agent.service /etc/init.d/k3s*; do
  if [ -e "$u" ]; then kv k3s_unit_path "$u"; blob k3s_unit "$u"; break; fi
done
[ -r ` + AppliedPath + ` ] && blob k3s_applied ` + AppliedPath + `
for d in /usr/local/bin /etc/rancher/k3s /etc/systemd/system /etc/init.d /boot/firmware /boot /var/lib/rancher/k3s/agent/images; do
  for f in "$d"/.*.rack-tmp-*; do [ -e "$f" ] && kv tmpfile "$f"; done
done
if [ -e /etc/rancher/k3s/config.yaml ]; then
  kv k3s_config_present 1
  if [ -r /etc/rancher/k3s/config.yaml ]; then blob k3s_config /etc/rancher/k3s/config.yaml; else kv k3s_config_unreadable 1; fi
fi
kv end 1
`

// Gather collects the host's Facts in one SSH round trip. The script runs
// as root (through sudo when the target uses it) so it can read k3s's
// config.yaml.
func (h *Host) Gather(ctx context.Context) (Facts, error) {
	out, err := h.Output(ctx, Sh(factsScript), RunOptions{Privileged: true, Quiet: true})
	if err != nil {
		return Facts{}, fmt.Errorf("gathering facts: %w", err)
	}
	f, err := ParseFacts(out)
	if err != nil {
		return f, fmt.Errorf("%s: gathering facts: %w", h.Target.Name, err)
	}
	return f, nil
}

// ParseFacts turns the facts script's output into Facts.
func ParseFacts(out []byte) (Facts, error) {
	kv := map[string]string{}
	multi := map[string][]string{} // keys printed once per value
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if key, delim, ok := strings.Cut(line, "<<"); ok && delim == factsDelim && !strings.Contains(key, "=") {
			var body []string
			closed := false
			for sc.Scan() {
				if sc.Text() == factsDelim {
					closed = true
					break
				}
				body = append(body, sc.Text())
			}
			if !closed {
				return Facts{}, fmt.Errorf("facts output truncated inside %s", key)
			}
			kv[key] = strings.Join(body, "\n")
			continue
		}
		if key, val, ok := strings.Cut(line, "="); ok {
			kv[key] = val
			multi[key] = append(multi[key], val)
		}
	}
	if err := sc.Err(); err != nil {
		return Facts{}, err
	}
	if kv["end"] != "1" {
		return Facts{}, fmt.Errorf("facts output truncated (no end marker)")
	}

	var f Facts
	f.Hostname = kv["hostname"]
	f.Machine = kv["uname_m"]
	f.Arch, f.ArchKnown = NormalizeArch(f.Machine)
	if !f.ArchKnown {
		f.Warnings = append(f.Warnings, fmt.Sprintf("unknown architecture %q (rack knows arm64, amd64, arm)", f.Machine))
	}
	f.OS = parseOSRelease(kv["os_release"])
	switch {
	case kv["systemd"] == "1":
		f.Init = "systemd"
	case kv["openrc"] == "1":
		f.Init = "openrc"
	}
	f.Model = strings.TrimSpace(strings.ReplaceAll(kv["model"], "\x00", ""))
	f.CmdlinePath = kv["cmdline_path"]
	if f.CmdlinePath != "" {
		f.Cmdline = strings.TrimRight(kv["cmdline"], "\n")
	}
	if ctl, ok := kv["cgroup2_controllers"]; ok {
		f.CgroupVersion = 2
		f.MemoryCgroup = hasWord(ctl, "memory")
	} else if en, ok := kv["proc_cgroups_memory"]; ok {
		f.CgroupVersion = 1
		f.MemoryCgroup = strings.TrimSpace(en) == "1"
	}
	f.Iptables = strings.TrimSpace(kv["iptables"])
	f.IptablesVersion, f.IptablesMode = parseIptables(f.Iptables)
	if v := kv["memtotal_kb"]; v != "" {
		kb, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			f.Warnings = append(f.Warnings, fmt.Sprintf("unparsable MemTotal %q", v))
		}
		f.MemTotal = kb * 1024
	}
	f.RancherDiskPath = kv["df_path"]
	if v := kv["df"]; v != "" {
		free, err := parseDfAvail(v)
		if err != nil {
			f.Warnings = append(f.Warnings, err.Error())
		}
		f.RancherDiskFree = free
	}
	f.K3sInstalled = kv["k3s_present"] == "1"
	if f.K3sInstalled {
		f.K3sVersion = parseK3sVersion(kv["k3s_version"])
		if f.K3sVersion == "" {
			f.Warnings = append(f.Warnings, fmt.Sprintf("/usr/local/bin/k3s exists but `k3s --version` said %q", kv["k3s_version"]))
		}
		f.K3sSHA256 = kv["k3s_sha256"]
	}
	f.K3sUnitPath = kv["k3s_unit_path"]
	f.K3sUnit = kv["k3s_unit"]
	f.K3sApplied = kv["k3s_applied"]
	f.TempFiles = multi["tmpfile"]
	f.K3sConfigPresent = kv["k3s_config_present"] == "1"
	f.K3sConfig = kv["k3s_config"]
	if kv["k3s_config_unreadable"] == "1" {
		f.Warnings = append(f.Warnings, "/etc/rancher/k3s/config.yaml is not readable (sudo disabled?)")
	}
	return f, nil
}

// NormalizeArch maps `uname -m` to Go/k3s architecture names.
func NormalizeArch(machine string) (arch string, known bool) {
	m := strings.TrimSpace(machine)
	switch m {
	case "aarch64", "arm64", "aarch64_be", "armv8b", "armv8l":
		if m == "armv8l" {
			return "arm", true // a 32-bit userland on a 64-bit core
		}
		return "arm64", true
	case "x86_64", "amd64":
		return "amd64", true
	case "armv7l", "armv7", "armv6l", "armhf", "arm":
		return "arm", true
	}
	return m, false
}

// parseOSRelease reads os-release's shell-style KEY=value lines.
func parseOSRelease(s string) OSRelease {
	var r OSRelease
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		v = unquoteOSRelease(v)
		switch k {
		case "ID":
			r.ID = v
		case "VERSION_ID":
			r.VersionID = v
		case "PRETTY_NAME":
			r.PrettyName = v
		}
	}
	return r
}

func unquoteOSRelease(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		q := v[0]
		v = v[1 : len(v)-1]
		if q == '"' {
			r := strings.NewReplacer(`\"`, `"`, `\\`, `\`, `\$`, `$`, "\\`", "`")
			v = r.Replace(v)
		}
	}
	return v
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// parseIptables reads "iptables v1.8.9 (nf_tables)" or "iptables v1.6.1".
func parseIptables(s string) (version, mode string) {
	for _, f := range strings.Fields(s) {
		switch {
		case strings.HasPrefix(f, "v") && len(f) > 1 && f[1] >= '0' && f[1] <= '9':
			version = strings.TrimPrefix(f, "v")
		case strings.HasPrefix(f, "(") && strings.HasSuffix(f, ")"):
			mode = strings.Trim(f, "()")
		}
	}
	if version != "" && mode == "" {
		mode = "legacy" // before 1.8 there was only the legacy backend
	}
	return version, mode
}

// parseDfAvail reads the Available column (KiB) of `df -Pk`'s data line:
// the field before the Capacity percentage, so spaces in the device or
// mount point names do not shift it.
func parseDfAvail(line string) (uint64, error) {
	f := strings.Fields(line)
	for i := len(f) - 1; i >= 1; i-- {
		if strings.HasSuffix(f[i], "%") {
			kb, err := strconv.ParseUint(f[i-1], 10, 64)
			if err != nil {
				break
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("unparsable df line %q", line)
}

// parseK3sVersion reads "k3s version v1.33.5+k3s1 (abc123)".
func parseK3sVersion(line string) string {
	f := strings.Fields(line)
	for i, w := range f {
		if w == "version" && i+1 < len(f) && strings.HasPrefix(f[i+1], "v") {
			return f[i+1]
		}
	}
	for _, w := range f {
		if strings.HasPrefix(w, "v1.") {
			return w
		}
	}
	return ""
}
