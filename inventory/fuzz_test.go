package inventory

import (
	"os"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the loader: it must never panic, and every
// problem it reports must point at a real line with a message a user can act on.
func FuzzParse(f *testing.F) {
	for _, file := range []string{"rack.yaml", "examples/single-node.yaml", "examples/ha.yaml"} {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(doc("", "", "")))
	f.Add([]byte("a: &x {b: *x}\n"))
	f.Add([]byte("nodes: [{<<: {name: a}, role: server}]\n"))
	f.Add([]byte("cluster: {k3s: {token: ${X}${}}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, problems := Parse("fuzz.yaml", data, Options{LookupEnv: func(string) (string, bool) { return "v", true }})
		if inv == nil {
			t.Fatal("Parse returned no inventory")
		}
		// LF, CRLF and a lone CR each end a line, for YAML and for the loader.
		lines := strings.Count(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n") + strings.Count(strings.ReplaceAll(string(data), "\r\n", ""), "\r") + 1
		for _, p := range problems {
			if p.Line < 1 || p.Line > lines+1 {
				t.Fatalf("problem %q points at line %d of a %d-line file", p, p.Line, lines)
			}
			if p.Message == "" || p.File != "fuzz.yaml" {
				t.Fatalf("problem without message or file: %+v", p)
			}
		}
	})
}
