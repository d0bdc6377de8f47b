package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	s := &settings{vals: map[string][]string{}}
	var warnings []string
	warn := func(f string, a ...any) { warnings = append(warnings, f) }
	err := parseConfig(s, "config.yaml", []byte(`token: abc
cluster-init: true
write-kubeconfig-mode: 0644
node-label:
  - a=b
  - c=d
disable: traefik,servicelb
mystery-token: hush
`), warn)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.str("write-kubeconfig-mode"); got != "0644" {
		t.Errorf("write-kubeconfig-mode %q: the YAML text must survive", got)
	}
	if !s.bool("cluster-init") {
		t.Error("cluster-init not true")
	}
	if got := s.list("disable"); !reflect.DeepEqual(got, []string{"traefik", "servicelb"}) {
		t.Errorf("disable %v", got)
	}
	if got := s.list("node-label"); !reflect.DeepEqual(got, []string{"a=b", "c=d"}) {
		t.Errorf("node-label %v", got)
	}
	if len(warnings) != 1 {
		t.Errorf("warnings %v, want one for mystery-token", warnings)
	}
	// The command line adds to slices and overrides values.
	if err := parseArgs(s, []string{"--node-label", "e=f", "--token=xyz", "--cluster-init"}); err != nil {
		t.Fatal(err)
	}
	if got := s.list("node-label"); len(got) != 3 {
		t.Errorf("node-label after flags %v", got)
	}
	args := strings.Join(s.nodeArgs("server"), " ")
	if strings.Contains(args, "xyz") || strings.Contains(args, "abc") || !strings.Contains(args, "--token ********") {
		t.Errorf("node-args leak or lack the token mask: %s", args)
	}
}

func TestParseToken(t *testing.T) {
	for raw, want := range map[string]token{
		"plain":                      {secret: "plain"},
		"K10abc::server:secret\n":    {caHash: "abc", secret: "secret"},
		"K10abc::node:agent-secret":  {caHash: "abc", secret: "agent-secret"},
		"K10notsecure-just-a-secret": {secret: "K10notsecure-just-a-secret"},
	} {
		if got := parseToken(raw); got != want {
			t.Errorf("parseToken(%q) = %+v, want %+v", raw, got, want)
		}
	}
}

func TestParseTaints(t *testing.T) {
	got, err := parseTaints([]string{"k=v:NoSchedule", "k2:NoExecute"})
	if err != nil {
		t.Fatal(err)
	}
	want := []taint{{"k", "v", "NoSchedule"}, {"k2", "", "NoExecute"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v", got)
	}
	for _, bad := range []string{"k=v", "k=v:Sometimes", ":NoSchedule"} {
		if _, err := parseTaints([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
