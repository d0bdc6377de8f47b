package main

import (
	"reflect"
	"testing"
	"time"
)

func TestCommandArgv(t *testing.T) {
	env := map[string]string{"A": "one two", "B": "x"}
	for _, tc := range []struct {
		line string
		path string
		argv []string
	}{
		{`/bin/echo $A ${A} pre${B}post '$B' "q\"uote"`, "/bin/echo",
			[]string{"/bin/echo", "one", "two", "one two", "prexpost", "$B", `q"uote`}},
		{`-@/bin/sh myname -c 'exit 0'`, "/bin/sh", []string{"myname", "-c", "exit 0"}},
		{`/bin/echo $$HOME`, "/bin/echo", []string{"/bin/echo", "$HOME"}},
	} {
		c := parseCommand(tc.line)
		path, argv, err := c.argv(env)
		if err != nil {
			t.Fatalf("%s: %v", tc.line, err)
		}
		if path != tc.path || !reflect.DeepEqual(argv, tc.argv) {
			t.Errorf("%s: got %s %q, want %s %q", tc.line, path, argv, tc.path, tc.argv)
		}
	}
	if c := parseCommand("-/bin/false"); !c.ignoreFail || c.raw != "/bin/false" {
		t.Errorf("prefix: %+v", c)
	}
}

func TestTimespan(t *testing.T) {
	for s, want := range map[string]time.Duration{
		"5s": 5 * time.Second, "90": 90 * time.Second, "1min 30s": 90 * time.Second,
		"infinity": 0, "0": 0, "100ms": 100 * time.Millisecond,
	} {
		if got, err := parseTimespan(s); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", s, got, err, want)
		}
	}
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{"k3s": "k3s.service", "k3s.service": "k3s.service",
		"multi-user.target": "multi-user.target", "a.b": "a.b.service"} {
		if got := normalize(in); got != want {
			t.Errorf("normalize(%q) = %q, want %q", in, got, want)
		}
	}
}
