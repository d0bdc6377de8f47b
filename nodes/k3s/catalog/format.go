package catalog

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Format writes the catalog in the SPEC's layout, one minor a block, with the
// header comment lines first. The output is byte-for-byte stable, so the
// embedded file can be compared with what the generator makes.
func Format(c *Catalog, header ...string) []byte {
	var b bytes.Buffer
	for _, h := range header {
		for _, line := range strings.Split(h, "\n") {
			b.WriteString(strings.TrimRight("# "+line, " ") + "\n")
		}
	}
	fmt.Fprintf(&b, "generated: %s\n", c.Generated)
	var ch []string
	if !c.Channels.Stable.IsZero() {
		ch = append(ch, "stable: "+c.Channels.Stable.String())
	}
	if !c.Channels.Latest.IsZero() {
		ch = append(ch, "latest: "+c.Channels.Latest.String())
	}
	fmt.Fprintf(&b, "channels: {%s}\n", strings.Join(ch, ", "))
	b.WriteString("minors:\n")
	for _, m := range c.Minors {
		fmt.Fprintf(&b, "  - minor: %s\n", strconv.Quote(m.Minor))
		if !m.Released.IsZero() {
			fmt.Fprintf(&b, "    released: %s\n", m.Released)
		}
		if !m.EOL.IsZero() {
			fmt.Fprintf(&b, "    eol: %s\n", m.EOL)
		}
		patches := make([]string, len(m.Patches))
		for i, p := range m.Patches {
			patches[i] = p.String()
		}
		fmt.Fprintf(&b, "    patches: [%s]\n", strings.Join(patches, ", "))
		if len(m.RemovedAPIs) > 0 {
			b.WriteString("    removedAPIs:\n")
			for _, r := range m.RemovedAPIs {
				fmt.Fprintf(&b, "      - {group: %s, version: %s, kind: %s", yamlString(r.Group), yamlString(r.Version), yamlString(r.Kind))
				if r.Replacement != "" {
					fmt.Fprintf(&b, ", replacement: %s", yamlString(r.Replacement))
				}
				b.WriteString("}\n")
			}
		}
	}
	return b.Bytes()
}

// yamlString leaves plain API names bare and quotes anything else (the core
// group's empty name, or a value YAML would read as something else).
func yamlString(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '/' || r == '-') {
			return strconv.Quote(s)
		}
	}
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "null", "y", "n":
		return strconv.Quote(s)
	}
	return s
}
