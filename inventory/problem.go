package inventory

import (
	"fmt"
	"sort"
	"strings"
)

// Severity of a Problem. Warnings are printed but do not make an inventory invalid.
type Severity string

// Severities.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Problem is one thing wrong with an inventory, located at a line and a key path.
type Problem struct {
	File     string   `json:"file"`
	Line     int      `json:"line"`
	Path     string   `json:"path"`
	Severity Severity `json:"severity"`
	Message  string   `json:"message"`
}

// String renders the problem as FILE:LINE: path.to.key: message.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	if p.Severity == SeverityWarning {
		b.WriteString("warning: ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Problems is every problem found in one inventory.
type Problems []Problem

// HasErrors reports whether any problem is an error (not just a warning).
func (ps Problems) HasErrors() bool { return ps.Count(SeverityError) > 0 }

// Count returns how many problems have severity s.
func (ps Problems) Count(s Severity) int {
	n := 0
	for _, p := range ps {
		if p.Severity == s {
			n++
		}
	}
	return n
}

// Sorted returns the problems ordered by line, then path, so output reads top to bottom.
func (ps Problems) Sorted() Problems {
	out := append(Problems(nil), ps...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Line != out[j].Line {
			return out[i].Line < out[j].Line
		}
		return out[i].Path < out[j].Path
	})
	return out
}

// Error makes a Problems usable as an error; it lists every error-severity problem.
func (ps Problems) Error() string {
	var lines []string
	for _, p := range ps.Sorted() {
		if p.Severity == SeverityError {
			lines = append(lines, p.String())
		}
	}
	return strings.Join(lines, "\n")
}

// positions maps a key path (nodes[1].address) to the line it was written on.
type positions map[string]int

// line returns the line of path, falling back to the nearest ancestor that has one,
// so a missing key points at the block that should have held it.
func (pos positions) line(path string) int {
	for p := path; ; {
		if l, ok := pos[p]; ok {
			return l
		}
		parent := parentPath(p)
		if parent == p {
			return pos[""]
		}
		p = parent
	}
}

// parentPath strips the last .key or [i] from a path.
func parentPath(p string) string {
	if p == "" {
		return ""
	}
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndex(p, "["); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndex(p, "."); i >= 0 {
		return p[:i]
	}
	return ""
}

// reporter collects problems for one file.
type reporter struct {
	file     string
	pos      positions
	problems Problems
}

func (r *reporter) at(sev Severity, line int, path, format string, args ...any) {
	r.problems = append(r.problems, Problem{File: r.file, Line: line, Path: path, Severity: sev, Message: fmt.Sprintf(format, args...)})
}

func (r *reporter) errorf(path, format string, args ...any) {
	r.at(SeverityError, r.pos.line(path), path, format, args...)
}

func (r *reporter) warnf(path, format string, args ...any) {
	r.at(SeverityWarning, r.pos.line(path), path, format, args...)
}
