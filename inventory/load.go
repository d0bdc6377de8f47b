package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"
)

// DefaultPath is where rack looks for the inventory when -i is not given.
const DefaultPath = "inventory/rack.yaml"

// Options tune loading; the zero value reads the real environment.
type Options struct {
	// LookupEnv resolves ${VAR} references. Defaults to os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// Load reads, decodes, defaults and validates the inventory at path. The error is
// non-nil only when the file cannot be read; everything wrong inside the file is
// reported as Problems, all at once, each with its line.
func Load(path string) (*Inventory, Problems, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("inventory %s does not exist: pass -i FILE or set RACK_INVENTORY (see inventory/examples/)", path)
		}
		return nil, nil, fmt.Errorf("read inventory: %w", err)
	}
	inv, problems := Parse(path, data, Options{})
	return inv, problems, nil
}

// Parse decodes data (named file in messages), applies defaults and validates.
// It never panics on any input; the inventory is returned even when it has
// problems so callers can still show what was understood.
func Parse(file string, data []byte, opts Options) (*Inventory, Problems) {
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	d := &decoder{
		reporter:  reporter{file: file, pos: positions{}},
		lookupEnv: opts.LookupEnv,
		fromEnv:   map[string]bool{},
	}
	inv := &Inventory{File: file}
	// CR and CRLF are YAML line breaks too; as LF, every line number we report
	// is the line an editor shows.
	data = bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
	data = bytes.ReplaceAll(data, []byte("\r"), []byte("\n"))

	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		line := yamlErrorLine(err, data)
		d.at(SeverityError, line, "", "not valid YAML: %s%s", yamlErrorText(err), tabHint(data, line))
		return inv, d.problems
	}
	if len(root.Content) == 0 {
		d.at(SeverityError, 1, "", "the inventory is empty: start from inventory/examples/single-node.yaml")
		return inv, d.problems
	}
	d.pos[""] = 1
	d.decode(root.Content[0], reflect.ValueOf(inv).Elem(), "")

	inv.pos = d.pos
	inv.fromEnv = d.fromEnv
	applyDefaults(inv)
	problems := append(d.problems, validate(inv, &d.reporter)...)
	return inv, problems.Sorted()
}

// decoder walks yaml.v3 nodes into Go values by hand, instead of yaml.Unmarshal,
// so that every key keeps its line, unknown keys get a did-you-mean, and all
// type errors are reported rather than the first.
type decoder struct {
	reporter
	lookupEnv func(string) (string, bool)
	fromEnv   map[string]bool
	depth     int // current nesting, aliases included
	work      int // nodes visited, to stop alias bombs
	stopped   bool
}

// Limits that no real inventory comes near; they stop self-referencing
// aliases and "billion laughs" documents from hanging rack.
const (
	maxDepth = 64
	maxWork  = 100_000
)

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if d.stopped {
		return
	}
	d.work++
	if d.depth >= maxDepth || d.work > maxWork {
		d.stopped = true
		d.at(SeverityError, n.Line, path, "nested too deeply or expands too far (a YAML alias that refers to itself?): simplify this part")
		return
	}
	d.depth++
	defer func() { d.depth-- }()
	// Anchors and aliases: decode what the alias points at.
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if _, seen := d.pos[path]; !seen {
		d.pos[path] = n.Line
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "key:" with no value means "not set"
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.at(SeverityError, n.Line, path, "expected a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.at(SeverityError, n.Line, path, "expected a map of key: value, got %s", describe(n))
			return
		}
		m := reflect.MakeMap(v.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			kp := joinPath(path, k.Value)
			d.pos[kp] = k.Line
			if r, ok := controlChar(k.Value); ok {
				d.at(SeverityError, k.Line, path, "a key holds the control character %U: remove it", r)
				continue
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			d.decode(val, ev, kp)
			m.SetMapIndex(reflect.ValueOf(k.Value), ev)
		}
		v.Set(m)
	default:
		d.decodeScalar(n, v, path)
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.at(SeverityError, n.Line, path, "expected a block of keys, got %s", describe(n))
		return
	}
	fields := yamlFields(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Value == "<<" { // YAML merge key: the merged block's keys, overridable here
			d.decode(val, v, path)
			continue
		}
		kp := joinPath(path, k.Value)
		idx, ok := fields[k.Value]
		if !ok {
			d.at(SeverityError, k.Line, kp, "unknown key %q%s", k.Value, didYouMean(k.Value, fieldNames(v.Type())))
			continue
		}
		if prev, dup := seen[k.Value]; dup {
			d.at(SeverityError, k.Line, kp, "key %q is given twice (first on line %d); keep one", k.Value, prev)
			continue
		}
		seen[k.Value] = k.Line
		d.pos[kp] = k.Line
		d.decode(val, v.Field(idx), kp)
	}
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.at(SeverityError, n.Line, path, "expected a single value, got %s", describe(n))
		return
	}
	text := n.Value
	if envRef.MatchString(text) {
		text = envRef.ReplaceAllStringFunc(text, func(ref string) string {
			name := envRef.FindStringSubmatch(ref)[1]
			val, ok := d.lookupEnv(name)
			if !ok {
				d.at(SeverityError, n.Line, path, "environment variable %s is not set: export it before running rack", name)
			}
			return val
		})
		d.fromEnv[path] = true
	}
	switch v.Kind() {
	case reflect.String:
		if r, ok := controlChar(text); ok {
			d.at(SeverityError, n.Line, path, "holds the control character %U: rack passes values to commands and files on the nodes, where a newline or escape would change their meaning; remove it", r)
		}
		v.SetString(text)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.ToLower(text))
		if err != nil && (strings.EqualFold(text, "yes") || strings.EqualFold(text, "no")) {
			b, err = strings.EqualFold(text, "yes"), nil
		}
		if err != nil {
			d.at(SeverityError, n.Line, path, "expected true or false, got %q", text)
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		i, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			d.at(SeverityError, n.Line, path, "expected a whole number, got %q", text)
			return
		}
		v.SetInt(i)
	case reflect.Uint32:
		u, err := strconv.ParseUint(text, 10, 32)
		if err != nil {
			d.at(SeverityError, n.Line, path, "expected a whole number from 0 to 4294967295, got %q", text)
			return
		}
		v.SetUint(u)
	default:
		// Only reachable if types.go grows a field kind this decoder does not know.
		d.at(SeverityError, n.Line, path, "rack cannot decode a %s here (bug in rack)", v.Kind())
	}
}

// controlChar finds a control character (newline, tab, escape, DEL, C1…) or
// a Unicode line or paragraph separator in s.
func controlChar(s string) (rune, bool) {
	for _, r := range s {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return r, true
		}
	}
	return 0, false
}

// yamlFields maps a struct's yaml key names to field indexes.
func yamlFields(t reflect.Type) map[string]int {
	out := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		if name := yamlName(t.Field(i)); name != "" {
			out[name] = i
		}
	}
	return out
}

func fieldNames(t reflect.Type) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		if name := yamlName(t.Field(i)); name != "" {
			out = append(out, name)
		}
	}
	return out
}

func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a block of keys"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// yamlErrorLine is the line an editor shows for a YAML error. The library
// counts lines from 0 in its parser errors ("did not find expected …") but
// from 1 in its scanner errors, and for an unclosed or broken {…} or […] it
// names where the collection starts (or, for one on the first line, where it
// noticed): the line of the nearest opening bracket at or before that point
// is the one to fix.
func yamlErrorLine(err error, data []byte) int {
	m := yamlLine.FindStringSubmatch(err.Error())
	if m == nil {
		return 1
	}
	line, _ := strconv.Atoi(m[1])
	msg := err.Error()
	if !strings.Contains(msg, "did not find expected") {
		return line
	}
	line++
	opener := ""
	switch {
	case strings.Contains(msg, "'}'"):
		opener = "{"
	case strings.Contains(msg, "']'"):
		opener = "["
	default:
		return line
	}
	lines := strings.Split(string(data), "\n")
	for l := min(line, len(lines)); l >= 1; l-- {
		if strings.Contains(lines[l-1], opener) {
			return l
		}
	}
	return line
}

// tabHint explains the commonest YAML mistake in hand-edited files.
func tabHint(data []byte, line int) string {
	lines := strings.Split(string(data), "\n")
	if line >= 1 && line <= len(lines) && strings.HasPrefix(strings.TrimLeft(lines[line-1], " "), "\t") {
		return " (this line is indented with a tab: YAML indents with spaces only)"
	}
	return ""
}

func yamlErrorText(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	s = regexp.MustCompile(`^line \d+: `).ReplaceAllString(s, "")
	if strings.Contains(s, "did not find expected ',' or") {
		s += " (this {…} or […] is not closed, or lacks a comma between its items)"
	}
	return s
}

// Dir is the folder holding the inventory; relative paths in it resolve from here.
func (inv *Inventory) Dir() string { return filepath.Dir(inv.File) }

// Where returns "FILE:LINE" for a key path, for error messages of later steps.
func (inv *Inventory) Where(path string) string {
	if inv.pos == nil {
		return inv.File
	}
	return fmt.Sprintf("%s:%d", inv.File, inv.pos.line(path))
}
