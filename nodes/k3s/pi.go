package k3s

import "strings"

// Raspberry Pi OS boots with the memory cgroup disabled; k3s needs it.
var piCgroupFlags = []string{"cgroup_memory=1", "cgroup_enable=memory"}

// PiCmdline returns cmdline.txt with the cgroup flags k3s needs appended, and
// whether anything was missing. cmdline.txt is one line; rack keeps it one line.
func PiCmdline(current string) (string, bool) {
	line := strings.TrimRight(current, "\r\n")
	fields := strings.Fields(line)
	have := map[string]bool{}
	for _, f := range fields {
		have[f] = true
	}
	changed := false
	for _, flag := range piCgroupFlags {
		if !have[flag] {
			fields = append(fields, flag)
			changed = true
		}
	}
	if !changed {
		return current, false
	}
	return strings.Join(fields, " ") + "\n", true
}
