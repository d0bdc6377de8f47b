package nodes

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Progress shows a fan-out as it runs. Implementations are safe for
// concurrent use.
type Progress interface {
	// Add announces a node before anything starts.
	Add(node string)
	Start(node string)
	// Step is what the node is doing now.
	Step(node, step string)
	// Line is one line of a node's command output.
	Line(node, line string)
	Done(node string, err error, d time.Duration)
	// Finish ends the display.
	Finish()
}

// NewProgress picks the display for w: a live, redrawn line per node on a
// terminal, plain "node | …" log lines otherwise (CI logs, pipes).
func NewProgress(w io.Writer) Progress {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd := int(f.Fd())
		return newLiveProgress(w, func() (int, int) {
			cols, rows, err := term.GetSize(fd)
			if err != nil {
				return 80, 24
			}
			return cols, rows
		})
	}
	return NewPlainProgress(w)
}

type nopProgress struct{}

func (nopProgress) Add(string)                        {}
func (nopProgress) Start(string)                      {}
func (nopProgress) Step(string, string)               {}
func (nopProgress) Line(string, string)               {}
func (nopProgress) Done(string, error, time.Duration) {}
func (nopProgress) Finish()                           {}

// PlainProgress writes one prefixed line per event.
type PlainProgress struct {
	mu sync.Mutex
	w  io.Writer
}

// NewPlainProgress logs to w.
func NewPlainProgress(w io.Writer) *PlainProgress { return &PlainProgress{w: w} }

func (p *PlainProgress) printf(node, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, node+" | "+format+"\n", args...)
}

// Add implements Progress.
func (p *PlainProgress) Add(string) {}

// Start implements Progress.
func (p *PlainProgress) Start(string) {}

// Step implements Progress.
func (p *PlainProgress) Step(node, step string) { p.printf(node, "> %s", step) }

// Line implements Progress.
func (p *PlainProgress) Line(node, line string) { p.printf(node, "%s", line) }

// Done implements Progress.
func (p *PlainProgress) Done(node string, err error, d time.Duration) {
	switch {
	case errors.Is(err, errSkipped):
		p.printf(node, "skipped: %v", err)
	case err != nil:
		p.printf(node, "FAILED after %s: %v", d.Round(10*time.Millisecond), err)
	default:
		p.printf(node, "done in %s", d.Round(10*time.Millisecond))
	}
}

// Finish implements Progress.
func (p *PlainProgress) Finish() {}

// liveProgress redraws a block of one line per node with ANSI escapes;
// command output scrolls above the block.
type liveProgress struct {
	w    io.Writer
	size func() (cols, rows int)
	now  func() time.Time

	mu     sync.Mutex
	order  []string
	nodes  map[string]*liveNode
	drawn  int
	ticker *time.Ticker
	stop   chan struct{}
	done   bool
}

type liveNode struct {
	state string // waiting, running, ok, failed, skipped
	step  string
	start time.Time
	took  time.Duration
	err   string
}

func newLiveProgress(w io.Writer, size func() (int, int)) *liveProgress {
	return &liveProgress{w: w, size: size, now: time.Now, nodes: map[string]*liveNode{}}
}

func (p *liveProgress) Add(node string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.nodes[node]; !ok {
		p.order = append(p.order, node)
		p.nodes[node] = &liveNode{state: "waiting"}
	}
	p.redraw("")
}

func (p *liveProgress) get(node string) *liveNode {
	n, ok := p.nodes[node]
	if !ok {
		n = &liveNode{state: "waiting"}
		p.order = append(p.order, node)
		p.nodes[node] = n
	}
	return n
}

func (p *liveProgress) Start(node string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.get(node)
	n.state, n.start = "running", p.now()
	if p.ticker == nil && !p.done {
		// Elapsed times tick even when nothing else happens.
		p.ticker = time.NewTicker(250 * time.Millisecond)
		p.stop = make(chan struct{})
		go func(t *time.Ticker, stop chan struct{}) {
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					p.mu.Lock()
					p.redraw("")
					p.mu.Unlock()
				}
			}
		}(p.ticker, p.stop)
	}
	p.redraw("")
}

func (p *liveProgress) Step(node, step string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.get(node).step = step
	p.redraw("")
}

func (p *liveProgress) Line(node, line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.redraw(node + " | " + line)
}

func (p *liveProgress) Done(node string, err error, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.get(node)
	n.took = d
	switch {
	case errors.Is(err, errSkipped):
		n.state, n.err = "skipped", firstLine(err.Error())
	case err != nil:
		n.state, n.err = "failed", firstLine(err.Error())
	default:
		n.state = "ok"
	}
	p.redraw("")
}

func (p *liveProgress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ticker != nil {
		p.ticker.Stop()
		close(p.stop)
		p.ticker = nil
	}
	p.redraw("")
	p.done = true
}

// redraw moves to the top of the block, clears it, prints logLine (if any)
// so it scrolls away above, and draws the block again. Lines are cut to
// the terminal width: a wrapped line would break the cursor arithmetic.
func (p *liveProgress) redraw(logLine string) {
	if p.done {
		if logLine != "" {
			fmt.Fprintln(p.w, logLine)
		}
		return
	}
	cols, rows := p.size()
	var b strings.Builder
	if p.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", p.drawn)
	}
	b.WriteString("\r\x1b[J")
	if logLine != "" {
		b.WriteString(logLine)
		b.WriteByte('\n')
	}
	lines := p.rows(rows - 1)
	for _, l := range lines {
		b.WriteString(cut(l, cols-1))
		b.WriteByte('\n')
	}
	p.drawn = len(lines)
	io.WriteString(p.w, b.String())
}

// rows renders the block; when it does not fit the terminal, finished
// nodes are folded into a count.
func (p *liveProgress) rows(limit int) []string {
	width := 0
	for _, name := range p.order {
		width = max(width, len(name))
	}
	render := func(name string) string {
		n := p.nodes[name]
		switch n.state {
		case "running":
			return fmt.Sprintf("\x1b[33m⠿\x1b[0m %-*s  running  %6s  %s", width, name, p.now().Sub(n.start).Round(100*time.Millisecond), n.step)
		case "ok":
			return fmt.Sprintf("\x1b[32m✓\x1b[0m %-*s  done     %6s", width, name, n.took.Round(100*time.Millisecond))
		case "failed":
			return fmt.Sprintf("\x1b[31m✗\x1b[0m %-*s  FAILED   %6s  %s", width, name, n.took.Round(100*time.Millisecond), n.err)
		case "skipped":
			return fmt.Sprintf("- %-*s  skipped          %s", width, name, n.err)
		}
		return fmt.Sprintf("· %-*s  waiting", width, name)
	}
	var out []string
	if len(p.order) <= limit || limit < 3 {
		for _, name := range p.order {
			out = append(out, render(name))
		}
		return out
	}
	counts := map[string]int{}
	for _, name := range p.order {
		n := p.nodes[name]
		counts[n.state]++
		if (n.state == "running" || n.state == "failed") && len(out) < limit-1 {
			out = append(out, render(name))
		}
	}
	out = append(out, fmt.Sprintf("%d done, %d failed, %d running, %d waiting", counts["ok"], counts["failed"], counts["running"], counts["waiting"]))
	return out
}

// cut shortens s to n visible columns, keeping ANSI colour escapes intact.
func cut(s string, n int) string {
	if n <= 0 {
		return ""
	}
	var b strings.Builder
	visible := 0
	inEsc := false
	for _, r := range s {
		switch {
		case inEsc:
			b.WriteRune(r)
			if r >= '@' && r <= '~' && r != '[' {
				inEsc = false
			}
			continue
		case r == '\x1b':
			inEsc = true
			b.WriteRune(r)
			continue
		}
		if visible >= n {
			continue
		}
		b.WriteRune(r)
		visible++
	}
	if visible >= n {
		b.WriteString("\x1b[0m")
	}
	return b.String()
}
